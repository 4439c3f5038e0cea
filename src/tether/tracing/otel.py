"""The OpenTelemetry half of ``tether.tracing``: connection and message spans, context in layer messages, delivery lag.

**Spans.** Each WebSocket or HTTP consumer instance gets a connection span (kind SERVER, named after the scope type
and the consumer class), a root: a client's ``traceparent`` header is not followed, since any client could otherwise
choose what is sampled. Each message handled gets a span that is a *child* of the connection span, so a sampler's one
decision per connection covers its messages: an unsampled connection's messages cost no span at all (one attribute
read each), and a sampled connection tells its whole story in one trace. The price is a long trace for a long-lived
connection, whose root arrives when the connection closes. Workers (``channel`` scopes) have no connection, so their
message spans are roots, sampled one by one.

**Context in messages.** The layer's ``send`` and ``group_send`` are wrapped (instance attributes, as the metrics
observer does it): each starts a PRODUCER span and sends a copy of the message holding, under ``TRACE_KEY``, that
span's context (through the global propagator, W3C ``traceparent`` by default) and the wall-clock send time. Any
layer that carries a dict of str carries it. A delivery's span links to the send's span (a link, not a parent: one
``group_send`` may reach thousands of connections in many processes, and each delivery belongs to its connection's
trace and sampling decision; a send's trace does not grow by a span per member).

**Delivery lag.** The seconds from the send to the first frame the receiving consumer writes while handling that
message, in the histogram ``tether.delivery.lag`` of the OpenTelemetry metrics API, by consumer class. Clocks of
different hosts must agree (NTP) for it to mean anything across hosts.

Attributes never hold message bodies, query strings, client addresses, channel or group names: only class names,
message types, close codes, status codes and the path with its captured URL values replaced by their names.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from django.core.exceptions import ImproperlyConfigured

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised by tests that hide the package
    raise ImproperlyConfigured(
        "TETHER_TRACING = True needs OpenTelemetry: pip install 'django-tether[otel]' (or set TETHER_TRACING = False)."
    ) from exc

import tether
from tether.tracing import TRACE_KEY
from tether.types import Message, Receive, Scope, Send

__all__ = ["LAG_BUCKETS", "LAG_HISTOGRAM", "Tracing", "route_of"]

#: The name of the delivery-lag histogram (seconds, attribute ``tether.consumer``).
LAG_HISTOGRAM = "tether.delivery.lag"
#: Its bucket bounds (seconds), advised to the SDK: a delivery in the same data centre takes a millisecond or two.
LAG_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_TRACED_LAYER_CALLS = ("send", "group_send")
#: Message types longer than this are cut in attributes and span names (they come from code, but a layer message
#: may come from anywhere).
_MAX_TYPE_LENGTH = 100
#: The frames that count as the socket write ending a delivery's lag.
_WRITES = frozenset({"websocket.send", "http.response.body"})


class _Delivery:
    """A layer message being handled: when it was sent, and its span (if recorded) to note the lag on."""

    __slots__ = ("sent_at", "span", "written")

    def __init__(self, sent_at: float, span: Span | None) -> None:
        self.sent_at = sent_at
        self.span = span
        self.written = False


#: The delivery whose handler runs in this context (a task's context: handlers that overlap each have their own).
_current_delivery: ContextVar[_Delivery | None] = ContextVar("tether_tracing_delivery", default=None)


def _message_type(message: Message) -> str:
    kind = message.get("type")
    return kind[:_MAX_TYPE_LENGTH] if isinstance(kind, str) else "unknown"


def route_of(scope: Scope) -> str:
    """The scope's path with each segment that ``URLRouter`` captured replaced by ``{name}`` (``{0}`` for positional
    captures): ``/ws/room/42/`` routed by ``ws/room/<int:room>/`` is ``/ws/room/{room}/``. Captured values may be
    identifiers or tokens, which do not belong in a span; the query string is never used."""
    path = scope.get("path")
    if not isinstance(path, str):
        return ""
    captured = scope.get("url_route") or {}
    names: dict[str, str] = {}
    for index, value in enumerate(captured.get("args") or ()):
        names.setdefault(str(value), f"{{{index}}}")
    for name, value in (captured.get("kwargs") or {}).items():
        names[str(value)] = f"{{{name}}}"
    if not names:
        return path
    return "/".join(names.get(segment, segment) for segment in path.split("/"))


def _carried(message: Message) -> tuple[trace.SpanContext | None, float | None]:
    """Take the trace entry out of ``message``: the sender's span context and send time, each ``None`` if absent."""
    entry = message.pop(TRACE_KEY, None)
    if type(entry) is not dict:
        return None, None
    sent_at = entry.get("sent_at")
    carrier = entry.get("context")
    span_context = None
    if type(carrier) is dict:
        span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        if not span_context.is_valid:
            span_context = None
    return span_context, float(sent_at) if isinstance(sent_at, (int, float)) else None


class _Connection:
    """The tracing of one consumer instance: its span, and the wrappers of its ``dispatch`` and ``send``."""

    __slots__ = ("answered", "consumer_class", "consumer_name", "lag", "span", "tracer")

    def __init__(self, tracing: Tracing, consumer: Any, span: Span | None) -> None:
        self.tracer = tracing.tracer
        self.lag = tracing.lag
        self.span = span
        self.answered = False  # the handshake was answered (accepted, refused or denied)
        cls = type(consumer)
        self.consumer_name = cls.__name__
        self.consumer_class = f"{cls.__module__}.{cls.__qualname__}"

    def wrap_dispatch(self, dispatch: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        connection_span = self.span
        # One decision per connection: messages of an unsampled connection get no span (the sampler said no).
        recording = connection_span is None or connection_span.is_recording()
        # A worker's messages (no connection) are roots, not children of whatever context the loop happens to hold.
        parent = otel_context.Context()
        if connection_span is not None:
            parent = trace.set_span_in_context(connection_span, parent)

        async def traced_dispatch(message: Message) -> None:
            if TRACE_KEY in message:
                link, sent_at = _carried(message)
            else:
                link = sent_at = None
            if not recording:
                await self._handle(dispatch, message, sent_at, None)
                return
            message_type = _message_type(message)
            layer_message = link is not None or sent_at is not None
            attributes: dict[str, Any] = {"tether.consumer": self.consumer_class, "tether.message.type": message_type}
            if layer_message:
                attributes["messaging.system"] = "tether"
                attributes["messaging.operation.type"] = "process"
            span = self.tracer.start_span(
                message_type,
                context=parent,
                kind=SpanKind.CONSUMER if layer_message else SpanKind.INTERNAL,
                attributes=attributes,
                links=[Link(link)] if link is not None else None,
            )
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                await self._handle(dispatch, message, sent_at, span)
            except BaseException as error:
                if isinstance(error, Exception):
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            finally:
                otel_context.detach(token)
                span.end()

        return traced_dispatch

    async def _handle(
        self,
        dispatch: Callable[[Message], Awaitable[None]],
        message: Message,
        sent_at: float | None,
        span: Span | None,
    ) -> None:
        if sent_at is None:
            await dispatch(message)
            return
        token = _current_delivery.set(_Delivery(sent_at, span))
        try:
            await dispatch(message)
        finally:
            _current_delivery.reset(token)

    def wrap_send(self, send: Send) -> Send:
        lag, attributes = self.lag, {"tether.consumer": self.consumer_name}
        span = self.span

        async def traced_send(message: Message) -> None:
            kind = message.get("type")
            if kind in _WRITES:
                delivery = _current_delivery.get()
                if delivery is not None and not delivery.written:
                    delivery.written = True
                    seconds = max(0.0, time.time() - delivery.sent_at)
                    lag.record(seconds, attributes)
                    if delivery.span is not None:
                        delivery.span.set_attribute("tether.delivery.lag", seconds)
            elif span is not None:
                self.note_answer(span, message)
            await send(message)

        return traced_send

    def note_answer(self, span: Span, message: Message) -> None:
        """Put the handshake's answer (``tether.outcome``), the close code or the HTTP status on the span."""
        kind = message.get("type")
        if kind == "websocket.accept":
            self.answered = True
            span.set_attribute("tether.outcome", "accepted")
        elif kind == "websocket.close":
            if not self.answered:
                self.answered = True
                span.set_attribute("tether.outcome", "refused")
            span.set_attribute("tether.close_code", message.get("code", 1000))
        elif kind in ("http.response.start", "websocket.http.response.start"):
            if kind.startswith("websocket") and not self.answered:
                self.answered = True
                span.set_attribute("tether.outcome", "denied")
            status = message.get("status")
            if isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


class Tracing:
    """Traces the consumers and layers of this process (installed by ``tether.tracing.configure``)."""

    def __init__(self) -> None:
        # The global providers' tracer and meter: proxies until the project sets its providers, then the real ones,
        # so the order in which settings and providers are set up does not matter.
        self.tracer = trace.get_tracer("tether", tether.__version__)
        self.lag = otel_metrics.get_meter("tether", tether.__version__).create_histogram(
            LAG_HISTOGRAM,
            unit="s",
            description="Seconds from a layer send or group_send to the receiving consumer's first write for it.",
            explicit_bucket_boundaries_advisory=LAG_BUCKETS,
        )
        #: False while ``TETHER_TRACING`` is off again: the layer wrappers pass messages through untouched.
        self.active = True
        self._instrumented: weakref.WeakSet[Any] = weakref.WeakSet()

    async def serve(self, consumer: Any, scope: Scope, receive: Receive, send: Send, serve: Any | None) -> None:
        """Run ``consumer`` (through ``serve``, the metrics observer's ``serve``, when given) inside its connection
        span, with its ``dispatch`` and ``send`` traced."""
        scope_type = scope.get("type")
        span: Span | None = None
        if scope_type in ("websocket", "http"):
            cls = type(consumer)
            span = self.tracer.start_span(
                f"{scope_type} {cls.__name__}",
                context=otel_context.Context(),  # a root: the client's traceparent is not followed
                kind=SpanKind.SERVER,
                attributes={
                    "tether.consumer": f"{cls.__module__}.{cls.__qualname__}",
                    "network.protocol.name": scope_type,
                    "url.scheme": str(scope.get("scheme") or ("ws" if scope_type == "websocket" else "http")),
                    "tether.route": route_of(scope),
                },
            )
        connection = _Connection(self, consumer, span)
        # An instance attribute over the class's method, as the metrics observer does: both ``__call__`` and the
        # durable settling path look ``dispatch`` up on the instance.
        consumer.dispatch = connection.wrap_dispatch(consumer.dispatch)
        traced_send = connection.wrap_send(send)
        # The connection span is the current span of everything the consumer does, so that what its handlers start
        # (a group_send, a database span) follows its sampling decision even where no message span is recorded.
        token = otel_context.attach(trace.set_span_in_context(span)) if span is not None else None
        try:
            if serve is not None:
                await serve(consumer, scope, receive, traced_send)
            else:
                await consumer(scope, receive, traced_send)
        except Exception as error:
            if span is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
            if span is not None:
                span.end()

    def instrument_layer(self, alias: str, layer: Any) -> None:
        """Wrap ``layer``'s ``send`` and ``group_send`` so that each starts a PRODUCER span and carries its context
        and send time in the message (a copy: the caller's dict is untouched). A layer is instrumented once."""
        if layer in self._instrumented:
            return
        self._instrumented.add(layer)
        for operation in _TRACED_LAYER_CALLS:
            method = getattr(layer, operation, None)
            if method is not None:
                setattr(layer, operation, _traced(self, alias, operation, method))


def _traced(tracing: Tracing, alias: str, operation: str, method: Callable[..., Awaitable[None]]) -> Any:
    async def traced(target: str, message: Message, *args: Any, **kwargs: Any) -> None:
        if not tracing.active or type(message) is not dict:
            await method(target, message, *args, **kwargs)  # off, or not a message: the layer says what is wrong
            return
        message_type = _message_type(message)
        with tracing.tracer.start_as_current_span(
            f"{operation} {message_type}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "tether",
                "messaging.operation.type": "send",
                "messaging.operation.name": operation,
                "tether.layer": alias,
                "tether.message.type": message_type,
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            stamped = dict(message)
            stamped[TRACE_KEY] = {"context": carrier, "sent_at": time.time()}
            await method(target, stamped, *args, **kwargs)

    traced.__name__ = traced.__qualname__ = operation
    traced.__doc__ = method.__doc__
    return traced
