"""Where the counting happens: in each consumer instance and around each channel layer, while metrics are on.

``Observer.watch`` gets one consumer instance ready to be counted, and ``as_asgi()`` runs it with the ``send`` the
watch gives and then tells the watch it ended: the messages its ``dispatch`` handled counted (and one in
``TIMED_EVERY`` timed), its ASGI ``send`` watched: the handshake's answer (accept, close, HTTP denial), the frames
sent, the close code. ``AsyncConsumer`` counts into the watch in line (its outbound queue and its ``dispatch``: a call
per message costs more than all the counting, see ``ConnectionWatch``); other classes are wrapped. With metrics off
``as_asgi()`` calls the consumer directly (one global read per connection). ``Observer.instrument_layer`` times a
layer's ``send``, ``group_send``, ``group_add`` and ``group_discard`` and counts their errors. ``receive`` is left
alone: its duration is the wait for the next message, not a latency, and a wrapper would cost every delivery of a
broadcast; an error there ends the consumer, which the connection counts show. No ``prometheus_client`` here:
counts go to a ``Tally``.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from asgiref.sync import markcoroutinefunction

from tether import loop_lag, status
from tether.metrics.tally import LIFECYCLE_KINDS, RECEIVED_KINDS, ConsumerCounts, Tally, _Histogram, message_kind
from tether.types import Message, Scope, Send

__all__ = ["ConnectionWatch", "Observer"]

_TIMED_LAYER_CALLS = ("send", "group_send", "group_add", "group_discard")

#: The first message a consumer sends answers the handshake: the outcome it stands for. Closing before accepting
#: refuses (the client sees HTTP 403); a denial sends an HTTP response of the consumer's choosing.
_ANSWERS = {
    "websocket.accept": "accepted",
    "websocket.close": "refused",
    "websocket.http.response.start": "denied",
    "http.response.start": "http",
}


class ConnectionWatch:
    """What one consumer instance did: the answer to its handshake, how it closed, and the messages it handled.

    ``AsyncConsumer`` counts into it in line, where it can (``tether.consumer``): its outbound queue counts the
    frames sent (``tether.outbound.SendWatcher``) and its ``dispatch`` the messages handled, in the histograms
    ``text``, ``binary`` and ``layer`` and through ``lifecycle``. A consumer class with a ``__call__`` or a ``dispatch``
    of its own gets wrappers instead (``wrap_send``, ``wrap_dispatch``), at a call more per message: a wrapper
    around ``dispatch`` cost 1.6 µs of server CPU per member of a ``group_send`` to 1,000 over uvicorn, 7% of the
    whole (benchmarks/metrics.py).
    """

    __slots__ = ("answer", "binary", "close_code", "counts", "layer", "send", "text", "websocket")

    def __init__(self, counts: ConsumerCounts, websocket: bool, send: Send, outbox_counts: bool) -> None:
        self.counts = counts
        self.websocket = websocket  # only WebSocket scopes count as connections
        self.answer: str | None = None  # accepted, refused, denied (or http: not a WebSocket)
        self.close_code: int | None = None  # sent by the consumer after accepting, else the client's
        # Looked up once per connection: a frame or a layer event costs attribute reads, not a lookup by kind.
        self.text = counts.handler("text")
        self.binary = counts.handler("binary")
        self.layer = counts.handler("layer")
        #: The ``send`` to give the consumer: the server's own when the connection's outbox counts what it sends,
        #: else the server's wrapped in a counter.
        self.send = send if outbox_counts else self.wrap_send(send)

    def sent(self, message: Message) -> None:
        """Count a message the consumer sends: a frame by kind, anything else as the handshake's answer or the close.
        (``Outbox.send`` writes this out, for every frame of a WebSocket.)"""
        if message.get("type") == "websocket.send":
            if message.get("text") is not None:
                self.counts.sent_text += 1
            else:
                self.counts.sent_binary += 1
        else:
            self.answered(message)

    def wrap_send(self, send: Send) -> Send:
        # A plain function returning the server's awaitable, not a coroutine around it: one coroutine less per
        # message sent. So a message is counted as it is handed to the server, before the send completes; one the
        # server refuses (the client just left) counts too.
        def counted_send(message: Message) -> Awaitable[None]:
            self.sent(message)
            return send(message)

        # Sync consumers wrap ``send`` in async_to_sync, which wants to see a coroutine function.
        return markcoroutinefunction(counted_send)

    def answered(self, message: Message) -> None:
        """Note the handshake's answer (counted at once) or, once accepted, the close code the consumer sent."""
        message_type = message.get("type", "")
        if self.answer is None:
            answer = _ANSWERS.get(message_type)
            if answer is not None:
                self.answer = answer
                if answer != "http":
                    self.counts.answered(answer)
        elif message_type == "websocket.close" and self.close_code is None:
            self.close_code = message.get("code", 1000)

    def lifecycle(self, message: Message) -> _Histogram:
        """The histogram of one of the connection's own events (``LIFECYCLE_KINDS``), which are all timed; a
        disconnect's code is the connection's close code unless the consumer sent one."""
        kind = LIFECYCLE_KINDS[message["type"]]
        if kind == "disconnect" and self.close_code is None:
            self.close_code = message.get("code", 1005)
        return self.counts.handler(kind)

    def histogram_for(self, message: Message) -> _Histogram:
        """The histogram ``message`` counts in, by its kind (``message_kind``; ``AsyncConsumer.dispatch`` writes
        this out, for every message)."""
        kind = message_kind(message)
        if kind in RECEIVED_KINDS:
            histogram: _Histogram = getattr(self, kind)
            return histogram
        return self.lifecycle(message)

    def wrap_dispatch(self, dispatch: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        # A plain function returning the consumer's own coroutine, as ``counted_send``: only one message in its
        # histogram's ``every`` pays for a clock and a coroutine around its handler.
        def counted_dispatch(message: Message) -> Awaitable[None]:
            histogram = self.histogram_for(message)
            histogram.handled += 1
            if histogram.handled % histogram.every:
                return dispatch(message)
            return _timed(dispatch, message, histogram)

        # Sync consumers' ``dispatch`` is a coroutine function too; keep looking like one.
        return markcoroutinefunction(counted_dispatch)

    def ended(self, failed: bool) -> None:
        """The consumer returned (or raised: ``failed``): count how its connection ended."""
        if not self.websocket:
            return
        if self.answer == "accepted":
            # No close code: the consumer raised, and the server dropped the connection (1006 for the client).
            self.counts.closed(self.close_code if self.close_code is not None else 1006)
        elif self.answer is None:
            self.counts.answered("failed" if failed else "abandoned")


class Observer:
    """Counts into ``tally`` what the consumers and layers of this process do (installed by ``tether.metrics``)."""

    def __init__(self, tally: Tally) -> None:
        #: Where counts go; ``tether.metrics.configure`` puts a fresh one here when it turns metrics on again.
        self.tally = tally
        self._instrumented: weakref.WeakSet[Any] = weakref.WeakSet()

    def watch(
        self, consumer: Any, scope: Scope, send: Send, *, counts_sends: bool = False, counts_dispatch: bool = False
    ) -> ConnectionWatch:
        """Get ``consumer`` ready to be counted and return its connection's watch: run the consumer with
        ``connection.send`` as its ``send``, then call ``connection.ended()``. WebSocket connections count as
        connections (attempts, open, closes); every scope counts its messages and handler durations.

        ``counts_sends``: the consumer gives a WebSocket's sends to an outbound queue that counts them into its
        ``_send_watcher``; ``counts_dispatch``: its ``dispatch`` counts into its ``_dispatch_watch``
        (``AsyncConsumer``'s own ``__call__`` and ``dispatch`` do). Otherwise wrappers count."""
        loop_lag.probe_for_running_loop()
        if status.publishing:  # the tether.status app is installed: this process reports to its admin page
            status.publish_from_running_loop()
        websocket = scope.get("type") == "websocket"
        outbox_counts = counts_sends and websocket
        connection = ConnectionWatch(self.tally.consumer(type(consumer).__name__), websocket, send, outbox_counts)
        if outbox_counts:
            consumer._send_watcher = connection
        if counts_dispatch:
            consumer._dispatch_watch = connection
        else:
            # An instance attribute in front of the class's method: __call__ and the durable-settling path both look
            # ``dispatch`` up on the instance, so both are timed.
            consumer.dispatch = connection.wrap_dispatch(consumer.dispatch)
        return connection

    def instrument_layer(self, alias: str, layer: Any) -> None:
        """Time ``layer``'s calls and count their errors under ``alias`` (instance attributes over its methods, so
        ``isinstance`` and every other attribute are untouched). A layer is instrumented once; its wrappers count
        into whichever tally the observer holds at the time."""
        if layer in self._instrumented:
            return
        self._instrumented.add(layer)
        for operation in _TIMED_LAYER_CALLS:
            method = getattr(layer, operation, None)
            if method is not None:
                setattr(layer, operation, _timed_layer_call(self, alias, operation, method))


async def _timed(dispatch: Callable[[Message], Awaitable[None]], message: Message, histogram: _Histogram) -> None:
    """Handle ``message``, and observe how long it took in ``histogram`` (standing for ``histogram.every``)."""
    started = perf_counter()
    try:
        await dispatch(message)
    finally:
        histogram.observe(perf_counter() - started, histogram.every)


def _timed_layer_call(observer: Observer, alias: str, operation: str, method: Callable[..., Awaitable[None]]) -> Any:
    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> None:
        started = perf_counter()
        error: BaseException | None = None
        try:
            await method(*args, **kwargs)
        except Exception as exc:
            error = exc
            raise
        finally:
            observer.tally.layer_call(alias, operation, perf_counter() - started, error)

    return timed
