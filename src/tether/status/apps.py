"""The ``tether.status`` Django app: the admin page's template and script, ``manage.py tether_status``, and the
per-process publisher switched on in ``ready``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["StatusConfig"]


class StatusConfig(AppConfig):
    name = "tether.status"
    label = "tether_status"
    verbose_name = "tether status"

    def ready(self) -> None:
        from tether import status

        status.configure()
