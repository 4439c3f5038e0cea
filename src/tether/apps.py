"""The Django app: ``"tether"`` in INSTALLED_APPS enables its management commands and system checks."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["ChannelsConfig", "TetherConfig"]


class TetherConfig(AppConfig):
    name = "tether"
    label = "tether"
    verbose_name = "tether"

    def ready(self) -> None:
        # Importing the module registers tether's system checks (tag "tether") with Django's check framework.
        from tether import checks, metrics, tracing  # noqa: F401
        from tether.revocation.signals import connect_signals

        # Logouts, password changes, deactivations and deleted sessions end the followed WebSockets of that login.
        connect_signals()
        # TETHER_METRICS = True starts counting (and needs prometheus_client); off, nothing is imported or counted.
        metrics.configure()
        # TETHER_TRACING = True traces connections, messages and layer sends (and needs OpenTelemetry).
        tracing.configure()


class ChannelsConfig(TetherConfig):
    """Channels' name for the app config, so ``"tether.apps.ChannelsConfig"`` in INSTALLED_APPS means tether.

    ``default = False`` keeps Django's automatic choice on ``TetherConfig`` for a plain ``"tether"`` entry (two
    candidate configs in one ``apps.py`` would otherwise leave Django with none).
    """

    default = False
