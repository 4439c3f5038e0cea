"""Graceful drain: a stopping server closes its WebSockets with 1012 a batch at a time, after their handlers finish.

What uvicorn (0.55, read from its source) does on SIGTERM or SIGINT, without tether: it stops listening, then calls
``shutdown()`` on every connection. Each of its WebSocket implementations (websockets-sansio, websockets, wsproto)
then sends close code 1012 ("service restart") to every client in the same instant and queues
``websocket.disconnect`` for the application, which cancels a tether handler in progress. uvicorn then waits for the
connections to go (at most ``--timeout-graceful-shutdown``, forever by default), cancels the tasks left, and sends
``lifespan.shutdown``. So every client reconnects in the same second, to the processes that are left, and work in
progress is cut off.

tether changes one step, the connection's ``shutdown()``: ``WebSocketProtocol`` (``--ws tether.drain:WebSocketProtocol``
for uvicorn, applied by ``tether.server.make_server`` for ``runserver``) starts the drain of its event loop instead
of closing at once. The drain:

1. gives each open consumer (registered here by ``AsyncConsumer`` for the WebSocket's lifetime) a ``tether.drain``
   message, in batches spread evenly over ``TETHER_DRAIN_WINDOW`` seconds (10), oldest connections first: at most
   one batch every 0.1 s and at least 10 connections a batch, so 10 connections or fewer go at once; a connection
   that opens during the drain gets it at once;
2. the consumer handles that message like any other: after the handler in progress (and, with ``max_concurrency``,
   alone, after all of them), so a handler that has started finishes; it then closes with 1012;
3. ``TETHER_DRAIN_TIMEOUT`` seconds (20) after the signal, what is still open is closed as uvicorn would have (1012
   from the server, handlers cancelled), and uvicorn goes on with its shutdown. The ``lifespan.shutdown`` that
   follows closes the channel layers (``close_channel_layers``, called by ``ProtocolTypeRouter``).

Cost per WebSocket, whether or not the server ever drains: about 0.2 KiB (the ``Departure``, its registry entry and
the dispatch loop's start callback; its reader task starts only when its turn comes, ``tether.dispatch.LazySource``)
and a few microseconds when it opens (4.5 us measured over 10,000 registrations, when it still had a reader task);
nothing per message.

Accepting stops before any of this: uvicorn closes its listening sockets first. ``start_drain()`` starts the same
drain from elsewhere (another server's shutdown hook, a test); it is safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import weakref
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from tether.limits import DEFAULT_DRAIN_TIMEOUT, DEFAULT_DRAIN_WINDOW, drain_timeout, drain_window
from tether.types import Message

__all__ = [
    "DRAIN_MESSAGE_TYPE",
    "SERVICE_RESTART",
    "Departure",
    "close_channel_layers",
    "draining_ws_protocol",
    "enter",
    "open_connections",
    "start_drain",
]

logger = logging.getLogger("tether.drain")

#: RFC 6455's "service restart": the server goes away and the client should come back, after a delay.
SERVICE_RESTART = 1012
#: The type of the message a consumer gets when its turn in the drain comes (handler ``tether_drain``).
DRAIN_MESSAGE_TYPE = "tether.drain"
#: The shortest time between two batches, uvicorn's own tick: a 10-second window holds at most 100 batches, so the
#: loop wakes for the drain ten times a second, not once per connection.
_BATCH_INTERVAL = 0.1
#: The smallest batch: ten reconnections at once are no stampede, and a server with a handful of connections left
#: (a test server, a quiet night) then stops at once instead of taking the whole window over them.
_MIN_BATCH = 10


class Departure:
    """One open WebSocket consumer's place in its loop's drain: a lazy message source of the consumer's dispatch loop
    (``tether.dispatch.LazySource``), read only once its turn comes, so an open connection costs no reader for it."""

    __slots__ = ("asked", "drain", "given", "loop", "start")

    def __init__(self, drain: _LoopDrain, loop: asyncio.AbstractEventLoop) -> None:
        self.drain = drain
        self.loop = loop
        self.asked = False  # its turn has come
        self.given = False  # the drain message was received
        self.start: Callable[[Departure], None] | None = None

    def ask(self) -> None:
        """It is this connection's turn: its consumer receives the drain message next."""
        if self.asked:
            return
        self.asked = True
        start, self.start = self.start, None
        if start is not None:
            start(self)

    def arm(self, start: Callable[[Departure], None]) -> None:
        """Have ``start(self)`` called when the turn comes (soon, if it has come already)."""
        if self.asked:
            self.loop.call_soon(start, self)
        else:
            self.start = start

    def disarm(self) -> None:
        self.start = None

    async def __call__(self) -> Message:
        """The drain message once asked, then nothing ever again (the dispatch loop cancels the wait when it ends)."""
        if self.given or not self.asked:
            await self.loop.create_future()
        self.given = True
        return {"type": DRAIN_MESSAGE_TYPE}

    def leave(self) -> None:
        """The connection has ended: it is no longer waited for."""
        self.drain.leave(self)


class _LoopDrain:
    """The open consumers of one event loop and, once the server stops, the drain of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # A weak reference: the map of drains is keyed by the loop weakly, and a value holding its key would keep
        # every loop a test suite ever ran alive.
        self.loop_ref = weakref.ref(loop)
        self.open: dict[Departure, None] = {}  # in the order the connections opened
        self.task: asyncio.Task[None] | None = None
        self.all_left: asyncio.Event | None = None  # while the drain waits for the last connections
        # The server's own close of each connection that asked to be drained, for those still open at the deadline.
        self.force: list[Callable[[], None]] = []

    def enter(self, loop: asyncio.AbstractEventLoop) -> Departure:
        departure = Departure(self, loop)
        self.open[departure] = None
        if self.task is not None:
            departure.ask()  # opened while the server stops: it goes as soon as its connect() is handled
        return departure

    def leave(self, departure: Departure) -> None:
        self.open.pop(departure, None)
        if not self.open and self.all_left is not None:
            self.all_left.set()

    def begin(self, force: Callable[[], None] | None = None) -> asyncio.Task[None]:
        """Start draining (once; later calls join the drain in progress); ``force`` closes one connection for good."""
        if force is not None:
            self.force.append(force)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run(*_drain_times()))
        return self.task

    async def run(self, window: float, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        queue = list(self.open)
        batches = max(1, min(math.ceil(len(queue) / _MIN_BATCH), math.ceil(window / _BATCH_INTERVAL)))
        logger.info(
            "Draining %d WebSocket connection(s): closing them with %d over %g s (TETHER_DRAIN_WINDOW).",
            len(queue),
            SERVICE_RESTART,
            window,
        )
        try:
            for index in range(batches):
                delay = start + window * index / batches - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                for departure in queue[index * len(queue) // batches : (index + 1) * len(queue) // batches]:
                    departure.ask()
            queue = []
            if self.open:
                self.all_left = asyncio.Event()
                remaining = start + timeout - loop.time()
                try:
                    await asyncio.wait_for(self.all_left.wait(), max(remaining, 0))
                except asyncio.TimeoutError:
                    logger.warning(
                        "%d WebSocket connection(s) still open %g s after the server was told to stop "
                        "(TETHER_DRAIN_TIMEOUT); the server closes them, cancelling their handlers.",
                        len(self.open),
                        timeout,
                    )
        finally:
            force, self.force, self.task, self.all_left = self.force, [], None, None
            for close in force:
                close()
        logger.info("Drained in %.2f s.", loop.time() - start)


def _drain_times() -> tuple[float, float]:
    """The window and the timeout; the defaults, with an error logged, for bad settings (``tether.E012`` names them)."""
    try:
        return drain_window(), drain_timeout()
    except ImproperlyConfigured as exc:
        logger.error("%s Draining with the defaults instead.", exc)
        return DEFAULT_DRAIN_WINDOW, DEFAULT_DRAIN_TIMEOUT


# Event loop -> its drain. Loops run in several threads (the test server, runserver's), so the map has a lock; each
# drain is only used in its own loop's thread.
_drains: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopDrain] = weakref.WeakKeyDictionary()
_drains_lock = threading.Lock()


def _drain_of(loop: asyncio.AbstractEventLoop) -> _LoopDrain:
    with _drains_lock:
        drain = _drains.get(loop)
        if drain is None:
            drain = _drains[loop] = _LoopDrain(loop)
        return drain


def enter() -> Departure:
    """Register the running WebSocket consumer for the drain; call ``leave()`` on the result when it ends."""
    loop = asyncio.get_running_loop()
    return _drain_of(loop).enter(loop)


def open_connections() -> int:
    """How many WebSocket consumers of this process are open (for metrics and tests)."""
    with _drains_lock:
        drains = list(_drains.values())
    return sum(len(drain.open) for drain in drains)


def start_drain() -> None:
    """Drain the WebSockets of every event loop of this process, from any thread (another server's stop hook).

    uvicorn with ``WebSocketProtocol`` needs no call: its shutdown starts the drain. Stop accepting new connections
    first, or they are drained as they open.
    """
    with _drains_lock:
        drains = list(_drains.values())
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for drain in drains:
        loop = drain.loop_ref()
        if loop is None or loop.is_closed():
            continue
        if loop is running:
            drain.begin()
        else:
            loop.call_soon_threadsafe(drain.begin)


#: Each protocol class's draining subclass, made once (tests build many servers).
_draining_classes: dict[type[Any], type[Any]] = {}


def draining_ws_protocol(ws_protocol: type[Any]) -> type[Any]:
    """A subclass of one of uvicorn's WebSocket protocol classes whose ``shutdown()`` drains instead of closing.

    uvicorn calls ``shutdown()`` on every connection once it has stopped listening. The subclass starts the drain of
    the connection's event loop (see the module's docstring) and hands it the original ``shutdown()``, which the
    drain calls for the connections still open at ``TETHER_DRAIN_TIMEOUT``.
    """
    made = _draining_classes.get(ws_protocol)
    if made is not None:
        return made

    class Draining(ws_protocol):  # type: ignore[misc]
        transport: asyncio.Transport

        def shutdown(self) -> None:
            _drain_of(asyncio.get_running_loop()).begin(self._tether_close_now)

        def _tether_close_now(self) -> None:
            if self.transport is not None and not self.transport.is_closing():
                ws_protocol.shutdown(self)

    Draining.__name__ = Draining.__qualname__ = f"Draining{ws_protocol.__name__}"
    return _draining_classes.setdefault(ws_protocol, Draining)


async def close_channel_layers() -> None:
    """Close every channel layer this process has built (their connections and tasks), logging each; never raises.

    Called when the server's lifespan ends, after the drain, so nothing uses the layers any more.
    """
    from tether.layers import channel_layers

    for alias, layer in list(channel_layers.backends.items()):
        try:
            await layer.close()
        except Exception:
            logger.exception("Closing the channel layer %r failed.", alias)
        else:
            logger.info("Closed the channel layer %r.", alias)


_ws_protocol: type[Any] | None = None


def __getattr__(name: str) -> Any:
    """``WebSocketProtocol``: uvicorn's websockets-sansio protocol, draining and lighter (``tether.wsprotocol``), for
    ``uvicorn --ws``.

    Built when first asked for, so that importing this module does not need uvicorn.
    """
    global _ws_protocol
    if name != "WebSocketProtocol":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _ws_protocol is None:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

        from tether.wsprotocol import lean_ws_protocol

        _ws_protocol = draining_ws_protocol(lean_ws_protocol(WebSocketsSansIOProtocol))
    return _ws_protocol
