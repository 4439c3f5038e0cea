"""The OpenTelemetry half of ``tether.tracing``: connection and message spans, context in layer messages, delivery lag.

**Spans.** Each WebSocket or HTTP consumer instance gets a connection span (kind SERVER, named after the scope type
and the consumer class), a root: a client's ``traceparent`` header is not followed, since any client could otherwise
choose what is sampled. Each message handled gets a span that is a *child* of the connection span, so a sampler's one
decision per connection covers its messages: a connection the sampler drops runs exactly as with tracing off (no
wrapper, no span per message), and a sampled connection tells its whole story in one trace. The price is a long trace
for a long-lived connection, whose root arrives when the connection closes. Workers (``channel`` scopes) have no
connection, so their message spans are roots, sampled one by one.

**Context in messages.** The layer's ``send`` and ``group_send`` are wrapped (instance attributes, as the metrics
observer does it): each starts a PRODUCER span and sends a copy of the message holding, under ``TRACE_KEY``, that
span's context (through the global propagator, W3C ``traceparent`` by default) and the wall-clock send time. Any
layer that carries a dict of str carries it. A delivery's span links to the send's span (a link, not a parent: one
``group_send`` may reach thousands of connections in many processes, and each delivery belongs to its connection's
trace and sampling decision; so a ``group_send`` to 1,000 members makes a span for the members whose connections
were sampled, about 10 with a 1% ratio sampler, not 1,000).

**Delivery lag.** The seconds from the send to the first frame the receiving consumer writes while handling that
message, in the histogram ``tether.delivery.lag`` of the OpenTelemetry metrics API, by consumer class, and on the
delivery's span. It is recorded for the deliveries whose span is recorded (sampled connections): the SDK's
``Histogram.record`` costs about 4 µs, as much as a whole in-process delivery, and sampling by connection keeps the
distribution fair while its counts are scaled down by the sampling ratio. Clocks of different hosts must agree (NTP)
for it to mean anything across hosts.

Attributes never hold message bodies, query strings, client addresses, channel or group names: only class names,
message types, close codes, status codes and the path with its captured URL values replaced by their names.
"""

from __future__ import annotations

import json
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
        "TETHER_TRACING = True needs OpenTelemetry: install tether's otel extra (pip install -e '.[otel]' in a clone "
        "of tether), or set TETHER_TRACING = False."
    ) from exc

import tether
from tether.exceptions import StopConsumer
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
    """A layer message being handled in a recorded span: when it was sent, and the span to note the lag on."""

    __slots__ = ("sent_at", "span", "written")

    def __init__(self, sent_at: float, span: Span) -> None:
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
    names.pop("", None)  # an empty capture would name the empty segments around every "/"
    # A capture of several segments (a ``<path:...>`` converter) is replaced where it stands, longest first.
    for value in sorted((value for value in names if "/" in value), key=len, reverse=True):
        path = path.replace(value, names.pop(value))
    if not names:
        return path
    return "/".join(names.get(segment, segment) for segment in path.split("/"))


def _entry(context: dict[str, str]) -> str:
    """The trace entry of a message: the propagator's fields and the send time, as one JSON string.

    A string rather than a dict: a message whose values are all immutable is given to each member of a group as a
    shallow copy (``tether.layers.messages.private_copier``), so the entry adds nothing to a delivery's cost where a
    nested dict would make every member's copy a deep one (15 to 29% more per ``group_send`` to 1,000 members with
    unsampled connections in benchmarks/tracing_cost.py, against none with the string).
    It is parsed only for a delivery whose span is recorded.
    """
    return json.dumps({"context": context, "sent_at": time.time()}, separators=(",", ":"))


def _parse(entry: Any) -> tuple[trace.SpanContext | None, float | None]:
    """The sender's span context and send time in a trace entry; ``None`` for what is missing or not tether's."""
    try:
        fields = json.loads(entry) if isinstance(entry, str) else None
    except ValueError:
        fields = None
    if type(fields) is not dict:
        return None, None
    sent_at, carrier = fields.get("sent_at"), fields.get("context")
    if not isinstance(sent_at, (int, float)) or isinstance(sent_at, bool):
        sent_at = None
    span_context = None
    if type(carrier) is dict:
        span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        if not span_context.is_valid:
            span_context = None
    return span_context, sent_at


def _failed(span: Span, error: Exception) -> None:
    """Mark ``span`` as failed by ``error``: the exception event (type, message, traceback) and an ERROR status."""
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


class _Connection:
    """The tracing of one consumer instance: its span, and the wrappers of its ``dispatch`` and ``send``."""

    __slots__ = ("answered", "closed", "consumer_class", "consumer_name", "lag", "span", "tracer")

    def __init__(self, tracing: Tracing, consumer: Any, span: Span | None) -> None:
        self.tracer = tracing.tracer
        self.lag = tracing.lag
        self.span = span
        self.answered = False  # the handshake was answered (accepted, refused or denied)
        self.closed = False  # the close code is on the span: the consumer's, or else the client's
        cls = type(consumer)
        self.consumer_name = cls.__name__
        self.consumer_class = f"{cls.__module__}.{cls.__qualname__}"

    def wrap_dispatch(self, dispatch: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        """``dispatch`` inside a span per message, for a sampled connection or a worker (whose message spans are
        roots, each sampled on its own, rather than children of whatever context the loop happens to hold)."""
        parent = otel_context.Context()
        if self.span is not None:
            parent = trace.set_span_in_context(self.span, parent)

        async def traced_dispatch(message: Message) -> None:
            entry = message.pop(TRACE_KEY, None) if TRACE_KEY in message else None
            message_type = _message_type(message)
            if message_type == "websocket.disconnect" and self.span is not None and not self.closed:
                self.closed = True
                self.span.set_attribute("tether.close_code", message.get("code", 1005))
            attributes: dict[str, Any] = {"tether.consumer": self.consumer_class, "tether.message.type": message_type}
            link = sent_at = None
            if entry is not None:
                attributes["messaging.system"] = "tether"
                attributes["messaging.operation.type"] = "process"
                link, sent_at = _parse(entry)
            span = self.tracer.start_span(
                message_type,
                context=parent,
                kind=SpanKind.INTERNAL if entry is None else SpanKind.CONSUMER,
                attributes=attributes,
                links=None if link is None else [Link(link)],
            )
            if not span.is_recording():  # a worker's message the sampler dropped
                sent_at = None
            context_token = otel_context.attach(trace.set_span_in_context(span))
            delivery_token = None if sent_at is None else _current_delivery.set(_Delivery(sent_at, span))
            try:
                await dispatch(message)
            except StopConsumer:
                raise  # the consumer's normal end (a disconnect handled), not a failure
            except Exception as error:
                _failed(span, error)
                raise
            finally:
                if delivery_token is not None:
                    _current_delivery.reset(delivery_token)
                otel_context.detach(context_token)
                span.end()

        return traced_dispatch

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
            if not self.closed:
                self.closed = True
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

    async def serve(self, consumer: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``consumer`` inside its connection span, with its ``dispatch`` and ``send`` traced (over the metrics
        observer's counting, when metrics are on: ``as_asgi()`` sets that up first)."""
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
        if span is None or span.is_recording():
            connection = _Connection(self, consumer, span)
            # An instance attribute over the class's method, as the metrics observer does: both ``__call__`` and the
            # durable settling path look ``dispatch`` up on the instance.
            consumer.dispatch = connection.wrap_dispatch(consumer.dispatch)
            send = connection.wrap_send(send)
        # else the sampler said no to this connection: it runs as with tracing off (the consumer's own dispatch
        # drops the trace key), so its messages cost nothing more; only its context below is set.
        # The connection span is the current span of everything the consumer does, so that what its handlers start
        # (a group_send, a database span) follows its sampling decision even where no message span is recorded.
        token = otel_context.attach(trace.set_span_in_context(span)) if span is not None else None
        try:
            await consumer(scope, receive, send)
        except Exception as error:
            if span is not None:
                _failed(span, error)
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
    # ``send(channel, message)`` and ``group_send(group, message)``: the message is the second argument, given by
    # position or, as Channels' signatures allow, by the keyword ``message``.
    async def traced(*args: Any, **kwargs: Any) -> None:
        by_keyword = "message" in kwargs
        message = kwargs["message"] if by_keyword else args[1] if len(args) > 1 else None
        if not tracing.active or type(message) is not dict:
            await method(*args, **kwargs)  # off, or not a message: the layer says what is wrong
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
            stamped[TRACE_KEY] = _entry(carrier)
            if by_keyword:
                kwargs["message"] = stamped
            else:
                args = (args[0], stamped, *args[2:])
            await method(*args, **kwargs)

    traced.__name__ = traced.__qualname__ = operation
    traced.__doc__ = method.__doc__
    return traced
