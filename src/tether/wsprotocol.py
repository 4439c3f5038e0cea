"""uvicorn's websockets-sansio protocol with less memory per connection: the same behaviour, lighter parts.

An open WebSocket on uvicorn's websockets-sansio implementation (uvicorn 0.55, read from its source) holds, for its
whole life, things it needs for a moment or that are larger than their job:

* an ``asyncio.Queue`` for the events going to the application: four deques and an ``asyncio.Event`` inside,
  about 3.1 KiB, for a queue that holds one message at most (uvicorn stops reading until the application took it)
  besides a disconnect, and has one reader;
* an ``asyncio.Event`` (a deque, about 0.8 KiB) that says whether the transport takes writes;
* a timer of the event loop for its keepalive (the next ping, or the deadline of the pong), about 0.7 KiB;
* the handshake's request and response (``self.request``, ``self.response``) with their headers, about 3 KiB,
  which nothing reads once the scope is built and the response sent (the request's headers stay even without
  ``self.request``: the websockets library's parser holds the request until the connection ends).

``lean_ws_protocol`` makes a subclass that puts a small queue and a small flag of its own in their place (same
methods, same order of wake-ups, same handling of a cancelled wait), gives its timers to one schedule per event loop
(``Timers``: a ping or a deadline comes at most ``TIMER_GRAIN``, a quarter of a second, late) and lets the handshake
objects go once they are used. That quarter of a second is all it gives up: the scope, the keepalive, the limits and
the close handling are uvicorn's own code.
tether's WebSocket protocol for uvicorn (``tether.drain:WebSocketProtocol``) and its server helper use it; the idle
benchmark (benchmark 5) measures what it saves. tests/test_wsprotocol.py checks the attributes it replaces against
the installed uvicorn.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["TIMER_GRAIN", "Inbox", "Timers", "Writable", "lean_ws_protocol", "timers_of"]


class Inbox:
    """A FIFO of the events for the application with ``asyncio.Queue``'s ``put_nowait``, ``get`` and ``empty``.

    No list while empty, no list of waiters while nobody waits: an idle connection holds one waiter (the
    application's pending ``receive``) and nothing else.
    """

    __slots__ = ("items", "loop", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[Any] | None = None
        self.waiters: list[asyncio.Future[Any]] | None = None

    def empty(self) -> bool:
        return not self.items

    def qsize(self) -> int:
        return len(self.items) if self.items else 0

    def put_nowait(self, item: Any) -> None:
        if self.items is None:
            self.items = [item]
        else:
            self.items.append(item)
        self._wake_next()

    def _wake_next(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break
        if not waiters:
            self.waiters = None

    async def get(self) -> Any:
        """The oldest event, waiting for one. A cancelled wait takes nothing, and passes an event that came meanwhile
        on to the next waiter (as ``asyncio.Queue`` does)."""
        while not self.items:
            waiter = _new_waiter(self)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                _drop_waiter(self, waiter)
                if self.items and not waiter.cancelled():
                    self._wake_next()
                raise
        items = self.items
        item = items.pop(0)  # not empty: the loop above waited for an item
        if not items:
            self.items = None
        return item


class Writable:
    """Whether the transport takes writes, with ``asyncio.Event``'s ``set``, ``clear``, ``is_set`` and ``wait``.

    Set for almost all of a connection's life, when ``wait`` returns at once; waiters are kept only while it is not.
    """

    __slots__ = ("flag", "loop", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.flag = True
        self.waiters: list[asyncio.Future[Any]] | None = None

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        if self.flag:
            return
        self.flag = True
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self.flag = False

    async def wait(self) -> bool:
        if self.flag:
            return True
        waiter = _new_waiter(self)
        try:
            await waiter
            return True
        finally:
            _drop_waiter(self, waiter)


def _new_waiter(owner: Inbox | Writable) -> asyncio.Future[Any]:
    """A future for ``owner`` to wake, in its list of waiters (made with the first one)."""
    waiter: asyncio.Future[Any] = owner.loop.create_future()
    if owner.waiters is None:
        owner.waiters = [waiter]
    else:
        owner.waiters.append(waiter)
    return waiter


def _drop_waiter(owner: Inbox | Writable, waiter: asyncio.Future[Any]) -> None:
    """Forget ``waiter`` if ``owner`` has not woken it (and the list, once empty)."""
    waiters = owner.waiters
    if waiters is not None and waiter in waiters:
        waiters.remove(waiter)
        if not waiters:
            owner.waiters = None


#: The keepalive's deadlines are kept to this many seconds: those of one slice share one timer of the event loop.
TIMER_GRAIN = 0.25


class _Due:
    """One deadline in its loop's ``Timers``; ``cancel()`` as a timer handle's (uvicorn only cancels them)."""

    __slots__ = ("args", "callback")

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.callback: Callable[..., object] | None = callback
        self.args = args

    def cancel(self) -> None:
        self.callback = None
        self.args = ()

    def cancelled(self) -> bool:
        return self.callback is None


class Timers:
    """The timers of one event loop's WebSocket protocols (keepalive pings, their deadlines, the closing handshake's
    wait), slice by slice of ``TIMER_GRAIN`` seconds: one loop timer per slice that has deadlines in it.

    Every connection has a keepalive timer for its whole life (the next ping, or the pong's deadline), and a timer of
    the loop costs about 700 bytes (uvloop's handle and its libuv timer); one of these, about 100. A deadline is met
    at most ``TIMER_GRAIN`` seconds late.
    """

    __slots__ = ("__weakref__", "loop", "slices")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slices: dict[int, list[_Due]] = {}

    def __getattr__(self, name: str) -> Any:
        """Everything else is the loop's: uvicorn's protocol reaches its loop through this object."""
        return getattr(self.loop, name)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Due:
        due = _Due(callback, args)
        slice_ = math.ceil((self.loop.time() + delay) / TIMER_GRAIN)
        dues = self.slices.get(slice_)
        if dues is None:
            dues = self.slices[slice_] = []
            self.loop.call_at(slice_ * TIMER_GRAIN, self.fire, slice_)
        dues.append(due)
        return due

    def fire(self, slice_: int) -> None:
        for due in self.slices.pop(slice_, ()):
            callback, args = due.callback, due.args
            if callback is None:
                continue
            due.cancel()
            try:
                callback(*args)
            except Exception as exc:  # as the loop would for a timer of its own: reported, the others still run
                self.loop.call_exception_handler(
                    {"message": f"Exception in callback {callback!r}", "exception": exc, "handle": due}
                )


# Weak values, not weak keys: a Timers holds its loop, and a value holding its key would keep every loop that ever
# served a WebSocket alive (a test suite's hundreds). An entry lasts while a protocol or a pending slice holds it.
_timers: weakref.WeakValueDictionary[asyncio.AbstractEventLoop, Timers] = weakref.WeakValueDictionary()


def timers_of(loop: asyncio.AbstractEventLoop) -> Timers:
    """The shared ``Timers`` of ``loop`` (each loop runs in one thread, and makes its own the first time, or again
    once nothing held the last one)."""
    timers = _timers.get(loop)
    if timers is None:
        timers = _timers[loop] = Timers(loop)
    return timers


#: Each protocol class's lean subclass, made once (tests build many servers).
_lean_classes: dict[type[Any], type[Any]] = {}


def lean_ws_protocol(ws_protocol: type[Any]) -> type[Any]:
    """A subclass of uvicorn's websockets-sansio protocol class (or of a subclass of it) that holds less per
    connection; see the module's docstring. Another class (wsproto's, the older websockets') is returned as it is."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    if not issubclass(ws_protocol, WebSocketsSansIOProtocol) or getattr(ws_protocol, "_tether_lean", False):
        return ws_protocol
    made = _lean_classes.get(ws_protocol)
    if made is not None:
        return made

    class Lean(ws_protocol):  # type: ignore[misc]
        _tether_lean = True
        loop: Any

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            loop = self.loop
            self.queue = Inbox(loop)
            self.writable = Writable(loop)
            # The protocol's timers (call_later) go to the loop's shared Timers; the rest of the loop is the loop's.
            self.loop = timers_of(loop)

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            # The request was read into the scope and answered; nothing reads it again. Its headers are emptied too:
            # the websockets library's parser keeps the request (a local of its generator) for the connection's life.
            self.request = None
            event.headers.clear()

        def start_keepalive(self) -> None:
            # uvicorn calls this right after it has sent the response that accepts the WebSocket (and only then):
            # the response is not read again.
            self.response = None
            super().start_keepalive()

    Lean.__name__ = Lean.__qualname__ = f"Lean{ws_protocol.__name__}"
    return _lean_classes.setdefault(ws_protocol, Lean)
