"""OpenTelemetry tracing for a tether project: a span per connection and per handled message, and the trace context
of every layer ``send`` and ``group_send`` carried inside the message, so that each delivery links to its send.

Off unless the settings say ``TETHER_TRACING = True``, and then it needs the OpenTelemetry API and SDK (the ``otel``
extra, docs/getting-started.md#1-install); without the setting nothing of OpenTelemetry is imported. The project
sets up its tracer and meter providers and exporters as OpenTelemetry documents (docs/observability.md#tracing);
tether only asks the global providers for a tracer and a meter named ``tether``.

This module holds the switch and the reserved key: ``configure()`` (called when the app is ready, and again when a
test changes the settings) installs a ``Tracing`` (``tether.tracing.otel``) that ``as_asgi()`` and the layer manager
consult. ``tracer`` is ``None`` while tracing is off. ``TRACE_KEY`` is the message key the context travels under:
the consumer's ``dispatch`` removes it before looking up the handler, with tracing on or off, so a message sent by a
process that traces reaches the handlers of a process that does not without a trace of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

if TYPE_CHECKING:
    from tether.tracing.otel import Tracing

__all__ = ["TRACE_KEY", "configure", "enabled", "tracer"]

#: The message key that carries the sender's trace context and send time through every layer. Reserved: a message
#: sent with this key has it replaced while tracing is on and removed before its handler runs either way.
TRACE_KEY = "_trace"

#: The tracing of this process while ``TETHER_TRACING`` is on; ``None`` while it is off (read once per connection).
tracer: Tracing | None = None
#: The one ``Tracing`` of the process, kept while tracing is off so that a layer is instrumented only once (its
#: wrappers pass messages straight through while it is inactive).
_tracing: Tracing | None = None


def enabled() -> bool:
    """Whether this process traces (``TETHER_TRACING`` was true when last configured)."""
    return tracer is not None


def configure() -> None:
    """Turn tracing on or off as ``TETHER_TRACING`` says.

    Raises ``ImproperlyConfigured`` when the setting is not a bool, or when it is on and OpenTelemetry is not
    installed (naming the extra that installs it).
    """
    global tracer, _tracing
    wanted: Any = getattr(settings, "TETHER_TRACING", False)
    if not isinstance(wanted, bool):
        raise ImproperlyConfigured(f"TETHER_TRACING must be True or False, not {wanted!r}.")
    if not wanted:
        if _tracing is not None:
            _tracing.active = False
        tracer = None
        return
    from tether.layers.manager import channel_layers

    if _tracing is None:
        from tether.tracing.otel import Tracing  # raises ImproperlyConfigured without OpenTelemetry

        _tracing = Tracing()
    _tracing.active = True
    tracer = _tracing
    # Layers built before tracing was on carry trace context from now on too.
    for alias, layer in list(channel_layers.backends.items()):
        tracer.instrument_layer(alias, layer)


def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting == "TETHER_TRACING":
        configure()


setting_changed.connect(_settings_changed, dispatch_uid="tether.tracing.configure")
