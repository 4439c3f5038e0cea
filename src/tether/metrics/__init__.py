"""Prometheus metrics for a tether project: connections, messages, handler and layer timings, drops, loop lag.

Off unless the settings say ``TETHER_METRICS = True``, and then they need ``prometheus_client`` (the ``metrics``
extra, docs/getting-started.md#1-install); without the setting nothing is imported and consumers run exactly
as before. Mount ``tether.metrics.views.metrics_view`` in the project's URLs, behind whatever protection suits it
(docs/observability.md lists every metric and shows a staff check and an IP allow-list).

This module holds the switch: ``configure()`` (called when the app is ready, and again when a test changes the
settings) installs an ``Observer`` that ``as_asgi()`` and the layer manager consult, and an ``Exporter`` that copies
the counts into prometheus_client. ``observer`` is ``None`` while metrics are off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from tether import loop_lag
from tether.limits import seconds_setting
from tether.metrics.observe import Observer
from tether.metrics.tally import Tally

if TYPE_CHECKING:
    from tether.metrics.export import Exporter

__all__ = ["configure", "enabled", "flush", "observer"]

#: The observer of this process while metrics are on; ``None`` while they are off (read once per connection).
observer: Observer | None = None
_exporter: Exporter | None = None
#: The one observer of the process, kept while metrics are off so that layers are instrumented only once.
_observer = Observer(Tally())

_DEFAULT_FLUSH_INTERVAL = 1.0


def enabled() -> bool:
    """Whether metrics are being counted in this process (``TETHER_METRICS`` was true when last configured)."""
    return observer is not None


def _flush_interval() -> float:
    return seconds_setting("TETHER_METRICS_FLUSH_INTERVAL", _DEFAULT_FLUSH_INTERVAL)


def configure() -> None:
    """Turn metrics on or off as ``TETHER_METRICS`` says.

    Raises ``ImproperlyConfigured`` when it is on and ``prometheus_client`` is not installed (naming the extra), or
    when ``TETHER_METRICS_FLUSH_INTERVAL`` is not a positive number.
    """
    global observer, _exporter
    wanted = getattr(settings, "TETHER_METRICS", False)
    if not isinstance(wanted, bool):
        raise ImproperlyConfigured(f"TETHER_METRICS must be True or False, not {wanted!r}.")
    if _exporter is not None:
        _exporter.stop()
        loop_lag.remove_listener(_exporter.tally.lag)
        observer = _exporter = None
    if not wanted:
        return
    interval = _flush_interval()
    from tether.layers.manager import channel_layers
    from tether.metrics.export import Exporter  # raises ImproperlyConfigured without prometheus_client

    tally = _observer.tally = Tally()
    _exporter = Exporter(tally, channel_layers, interval)
    loop_lag.add_listener(tally.lag)
    observer = _observer
    # Layers built before metrics were on are timed from now on too.
    for alias, layer in list(channel_layers.backends.items()):
        observer.instrument_layer(alias, layer)
    _exporter.start()


def flush() -> None:
    """Copy this process's counts into prometheus_client now (the exporter also does it every second)."""
    if _exporter is not None:
        _exporter.flush()


def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("TETHER_METRICS", "TETHER_METRICS_FLUSH_INTERVAL"):
        configure()


setting_changed.connect(_settings_changed, dispatch_uid="tether.metrics.configure")
