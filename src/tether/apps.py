"""The Django app: ``"tether"`` in INSTALLED_APPS enables its management commands and system checks."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["TetherConfig"]


class TetherConfig(AppConfig):
    name = "tether"
    label = "tether"
    verbose_name = "tether"

    def ready(self) -> None:
        # Importing the module registers tether's system checks (tag "tether") with Django's check framework.
        from tether import checks  # noqa: F401
