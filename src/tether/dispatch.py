"""How a consumer waits on its client and its channel layer at once: ``await_many_dispatch``.

A consumer has several sources of messages (the ASGI ``receive`` from the server, the layer's ``receive`` for its
channel) and, by default, one handler at a time. This is the loop that joins them, and the subtlest code in tether,
so here is what it promises and why it is built this way.

Promises:

* **Order.** Messages are handled in the order their receives completed, across sources: a layer message never
  overtakes a client frame that arrived before it.
* **One at a time** by default. A message is dispatched only after the previous handler returned; handlers never
  overlap, as in Channels. With ``max_concurrency`` above 1, up to that many handlers run at once, each in a task of
  its own; messages with the same ``concurrency_key`` still run one at a time in arrival order, and ``exclusive``
  messages (the connection's own events: connect, disconnect) run alone.
* **Prompt disconnect.** When the first source delivers a message that ``interrupts`` says ends the connection, the
  handlers still running are cancelled at once, the messages that were waiting before it are dropped, and it is
  dispatched next. A slow handler never keeps a dead connection alive.
* **Bounded read-ahead.** A source is at most two messages ahead of its handler, so a slow handler slows the reads
  from its sources, and the server's flow control (TCP windows, the layer's capacity) keeps working. (This also bounds
  the prompt disconnect: it is seen while a handler runs as long as at most one more client message waits behind it.)
* **Nothing kept.** No message is referenced once its handler returned: an idle connection holds no message.
* **Lazy sources read only once needed.** A lazy source (``LazySource``: the channel layer's channel, the drain)
  gets no reader until it says a message may be there (``arm``'s ``start``); what arrived before is kept by the
  source and read first. An idle connection then costs one reader, not three (about 1 KiB of memory each).
* **Clean exit.** It returns or raises when ``dispatch`` does, or raises what a source raised; every pending receive
  and running handler task is cancelled and awaited on the way out, so nothing is left half-done.

How: each source is read by one long-lived reader task, so a message costs no task creation (the per-message task
was taken out in the dispatch speed work; see the changelog). A reader hands a message over as soon as its receive
completes, which fixes the message's place in the order, then receives again once the message before it was taken.
With one handler at a time, handlers run one after another in one task of the loop's own (the runner), in a copy of
the caller's context, so context variables and cancellation behave as in plain code; the caller waits for the runner,
and cancelling the caller cancels it. The runner is a task of its own because every message wakes it, and a task's
wake-up resumes each frame it awaits through: the caller sits under the server and the project's routers and
middleware (ten frames in a typical project), the runner under one. A disconnect cancels the runner while it is
inside the handler and takes that
cancellation back (``Task.uncancel``) once the handler has unwound, as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

__all__ = ["LazySource", "await_many_dispatch"]


class _Reader:
    """How far one source's reader is ahead: its messages handed over and not yet taken, and its wait for room.

    A counter rather than a future per message: the reader waits (on ``room``) only when it is two messages ahead,
    which a consumer keeping up never is, so the common case creates and resolves no future.
    """

    __slots__ = ("room", "waiting")

    def __init__(self) -> None:
        self.waiting = 0
        self.room: asyncio.Future[None] | None = None


#: A handed-over message: (its reader, message, error, interrupts); no reader for a source's error.
_Item = tuple["_Reader | None", Any, "BaseException | None", bool]
#: The handler tasks of every loop that handles one message at a time: none (an empty set is 216 bytes).
_NO_TASKS: frozenset[asyncio.Task[None]] = frozenset()


class LazySource(Protocol):
    """A message source that is read only once it may have a message: most connections never get a layer message or
    the drain's, and a reader waiting on each would cost a task per connection for nothing.

    Calling it receives, as a plain source. ``arm(start)`` asks it to call ``start(self)`` once, on the loop, when a
    message may be there (at once if one is); from then on a reader receives from it. The source keeps what arrives
    before the reader's first receive. ``disarm()`` withdraws the request when the loop ends before ``start``.
    """

    def __call__(self) -> Awaitable[Any]: ...

    def arm(self, start: Callable[[LazySource], None]) -> None: ...

    def disarm(self) -> None: ...


async def await_many_dispatch(
    consumer_callables: list[Callable[[], Awaitable[Any]]],
    dispatch: Callable[[Any], Awaitable[Any]],
    *,
    interrupts: Callable[[Any], bool] | None = None,
    max_concurrency: int = 1,
    concurrency_key: Callable[[Any], Hashable | None] | None = None,
    exclusive: Callable[[Any], bool] | None = None,
    lazy: list[LazySource] | None = None,
) -> None:
    """Wait on several message sources at once and dispatch each message as it arrives.

    Each callable is a receive function (the ASGI ``receive``, a layer's ``receive`` for one channel). Every source
    keeps one receive pending, also while a handler runs, and messages are dispatched in the order their receives
    completed, so a layer message never overtakes a client frame that arrived before it. Returns or raises when
    ``dispatch`` does (or a source raises); pending receives and running handlers are cancelled on the way out.

    ``interrupts(message)``, for messages of the first source, tells a message that ends the connection (a
    disconnect): handlers still running are cancelled, messages waiting before it are dropped, and it is dispatched
    next, without being cancellable itself. ``max_concurrency`` above 1 dispatches up to that many messages at once,
    each in its own task; ``concurrency_key(message)`` returns a key whose messages run one at a time in arrival
    order (``None``: no order needed), and ``exclusive(message)`` marks messages that run alone, after the handlers
    before them and before any after them. Without these keywords it behaves as Channels' function: one message at a
    time (in a task of its own, which the caller awaits). ``lazy`` sources are read from the moment they say a
    message may be there.
    """
    if type(max_concurrency) is not int or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be a whole number of at least 1, not {max_concurrency!r}.")
    loop = _DispatchLoop(consumer_callables, interrupts, lazy)
    try:
        if max_concurrency == 1:
            # In a task of its own (see the module's docstring): 8% of an echo's cost through a consumer in-process,
            # more under routers and middleware. Awaiting it, the caller passes its cancellation on to it.
            loop.runner = loop.loop.create_task(loop.one_at_a_time(dispatch))
            await loop.runner
        else:
            await loop.concurrently(dispatch, max_concurrency, concurrency_key, exclusive or _never)
    finally:
        await loop.close()


def _never(message: Any) -> bool:
    return False


def _taken(reader: _Reader) -> None:
    """One of ``reader``'s messages was taken: let it receive again if it was waiting for room."""
    reader.waiting -= 1
    if reader.room is not None:
        _taken_room(reader)


def _taken_room(reader: _Reader) -> None:
    room, reader.room = reader.room, None
    if room is not None and not room.done():  # done: cancelled with its reader
        room.set_result(None)


class _DispatchLoop:
    """The readers, the queue of handed-over messages and the interruption state of one ``await_many_dispatch``."""

    # Slots: the loop reads and writes these on every message, and slot access is the cheaper.
    __slots__ = (
        "cancel_requested",
        "handlers_in_runner",
        "handling_interruption",
        "lazy",
        "loop",
        "pending_interrupts",
        "readers",
        "ready",
        "runner",
        "tasks",
        "wakeup",
    )

    def __init__(
        self,
        sources: list[Callable[[], Awaitable[Any]]],
        interrupts: Callable[[Any], bool] | None,
        lazy: list[LazySource] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        # Handed-over messages in the order their receives completed. At most two per source.
        # A list, not a deque: it holds a few items at most, and an empty deque takes 600 bytes per connection.
        self.ready: list[_Item] = []
        self.wakeup: asyncio.Future[None] | None = None
        # Interrupting messages handed over and not dispatched yet: everything before them is dropped.
        self.pending_interrupts = 0
        # One at a time: the task running the handlers, and whether an interruption asked to cancel it (to be taken
        # back).
        self.runner: asyncio.Task[None] | None = None
        # Set while one_at_a_time runs: handlers run in the runner, which an interruption cancels.
        self.handlers_in_runner = False
        # The interrupting message's own handler runs: it is not cancelled.
        self.handling_interruption = False
        self.cancel_requested = False
        # Concurrently: the handler tasks running (each cancelled by an interruption); one at a time: none, and no set.
        self.tasks: AbstractSet[asyncio.Task[None]] = _NO_TASKS
        self.readers = [
            self.loop.create_task(self.read(source, interrupts if index == 0 else None))
            for index, source in enumerate(sources)
        ]
        # Lazy sources not started yet (None once the loop closed: a start that comes late is ignored).
        self.lazy: list[LazySource] | None = lazy
        if lazy:
            for source in lazy:
                source.arm(self.start)

    def start(self, source: LazySource) -> None:
        """A lazy source may have a message: read it from now on (once; never after the loop closed)."""
        lazy = self.lazy
        if lazy is not None and source in lazy:
            lazy.remove(source)
            self.readers.append(self.loop.create_task(self.read(source, None)))

    def wake(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def wait(self) -> None:
        """Sleep until a reader hands a message over or a handler task ends."""
        self.wakeup = self.loop.create_future()
        try:
            await self.wakeup
        finally:
            self.wakeup = None

    async def read(self, source: Callable[[], Awaitable[Any]], interrupts: Callable[[Any], bool] | None) -> None:
        reader = _Reader()
        ready, wake, create_future = self.ready, self.wake, self.loop.create_future
        while True:
            try:
                message = await source()
            except Exception as error:
                ready.append((None, None, error, False))
                wake()
                return
            ends = interrupts is not None and interrupts(message)
            reader.waiting += 1
            ready.append((reader, message, None, ends))
            # Drop this frame's reference: it would otherwise keep the message alive while the next receive waits,
            # which for an idle connection is forever (a 1 MiB frame held per idle client).
            message = None
            wakeup = self.wakeup  # wake() written out: once per message of every source
            if wakeup is not None and not wakeup.done():
                wakeup.set_result(None)
            if ends:
                self.interrupt()
            if reader.waiting >= 2:  # two ahead of the handler: receive again once the older one is taken
                reader.room = create_future()
                await reader.room

    def interrupt(self) -> None:
        """The connection ended: cancel what is running, so the interrupting message is dispatched at once."""
        self.pending_interrupts += 1
        # A reader only runs while the runner is suspended, and the runner is suspended either in wait(), which sets
        # ``wakeup``, or in a handler. So no ``wakeup`` means a handler is running (no flag set per message).
        if (
            self.handlers_in_runner
            and self.wakeup is None
            and not self.handling_interruption
            and not self.cancel_requested
            and self.runner is not None
        ):
            self.cancel_requested = True
            self.runner.cancel()
        for task in self.tasks:
            task.cancel()

    def next_message(self) -> tuple[Any, bool] | None:
        """Take the next message to dispatch and whether it interrupts; ``None`` when there is none yet.

        Raises what a source raised. Messages that arrived before a pending interruption are dropped here.
        """
        while self.ready:
            reader, message, error, ends = self.ready.pop(0)
            if error is not None:
                raise error
            _taken(reader)  # type: ignore[arg-type]
            if ends:
                self.pending_interrupts -= 1
                return message, True
            if not self.pending_interrupts:
                return message, False
        return None

    async def one_at_a_time(self, dispatch: Callable[[Any], Awaitable[Any]]) -> None:
        # next_message() written out: this loop is the hot path of every consumer, and the call and the tuple it
        # returns cost 0.1 µs per message of an echo through a consumer (about 6 µs in all, in-process).
        ready, create_future = self.ready, self.loop.create_future
        try:
            self.handlers_in_runner = True
            while True:
                if not ready:
                    # wait() written out too: a coroutine call per idle wait cost 0.2 µs per message of an echo.
                    self.wakeup = create_future()
                    await self.wakeup
                    self.wakeup = None
                    continue
                reader, message, error, ends = ready.pop(0)
                if error is not None:
                    raise error
                reader.waiting -= 1  # type: ignore[union-attr]
                if reader.room is not None:  # type: ignore[union-attr]  # _taken() written out
                    _taken_room(reader)  # type: ignore[arg-type]
                if ends:
                    self.pending_interrupts -= 1
                    self.handling_interruption = True
                elif self.pending_interrupts:
                    message = None  # arrived before the disconnect that is on its way: dropped
                    continue
                try:
                    await dispatch(message)
                except asyncio.CancelledError:
                    if not self.cancel_requested:
                        raise
                finally:
                    # Nothing may keep a handled message alive while the loop waits for the next one (see the reader).
                    message = None
                if ends:
                    self.handling_interruption = False
                if self.cancel_requested:
                    self.cancel_requested = False
                    self.take_back_cancellation()
        finally:
            # Stop the readers now, in the step in which the handler's exception (or StopConsumer) leaves the
            # runner: a reader woken before the caller's clean-up would take a message nobody handles (a worker's
            # next instance finds a message left in its queue, not one taken by the instance that ended).
            self.stop_lazy()
            for task in self.readers:
                task.cancel()

    def take_back_cancellation(self) -> None:
        """Undo the runner's cancellation that an interruption asked for, once the handler has unwound.

        From Python 3.11 a task counts cancellation requests, and ``asyncio.timeout`` and task groups read that count:
        it is decremented (``Task.uncancel``), and a cancellation from elsewhere that arrived meanwhile still counts
        and ends the loop. Python 3.10 keeps no count, so catching the ``CancelledError`` was all there was to undo.
        """
        uncancel = getattr(self.runner, "uncancel", None)
        if uncancel is not None and uncancel() > 0:
            raise asyncio.CancelledError

    async def concurrently(
        self,
        dispatch: Callable[[Any], Awaitable[Any]],
        limit: int,
        key_of: Callable[[Any], Hashable | None] | None,
        exclusive: Callable[[Any], bool],
    ) -> None:
        chains: dict[Hashable, deque[Any]] = {}  # messages waiting for their key's earlier ones, first one running
        outstanding = 0  # messages taken and not yet handled: running or waiting in a chain
        failures: list[BaseException] = []
        alone = False  # an exclusive message is running: take nothing more until it is done

        tasks: set[asyncio.Task[None]] = set()
        self.tasks = tasks

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]
            self.wake()

        def start(handling: Coroutine[Any, Any, None]) -> None:
            task = self.loop.create_task(handling)
            tasks.add(task)
            task.add_done_callback(finished)

        async def run_one(message: Any) -> None:
            nonlocal outstanding
            try:
                await dispatch(message)
            finally:
                message = None
                outstanding -= 1

        async def run_chain(key: Hashable, chain: deque[Any]) -> None:
            nonlocal outstanding
            try:
                while chain:
                    try:
                        await dispatch(chain[0])
                    finally:
                        chain.popleft()
                        outstanding -= 1
            finally:
                outstanding -= len(chain)  # left behind by a cancellation or a failure
                chain.clear()
                del chains[key]

        while True:
            if failures:
                raise failures[0]
            if (alone and self.tasks) or not self.ready:
                await self.wait()
                continue
            alone = False
            _, head, error, ends = self.ready[0]
            # An exclusive message waits for the handlers before it; any other for a free slot. (With an interruption
            # pending, the head is dropped or is the interruption, which cancels the handlers it waits for.)
            busy = self.tasks if ends or exclusive(head) else outstanding >= limit
            head = None
            if error is None and not self.pending_interrupts and busy:
                await self.wait()
                continue
            item = self.next_message()
            if item is None:
                continue
            message, ends = item
            item = None
            if ends or exclusive(message):
                if self.tasks:  # cancelled by the interruption: let them unwind first
                    await asyncio.gather(*self.tasks, return_exceptions=True)
                alone = True
                outstanding += 1
                start(run_one(message))
            else:
                key = key_of(message) if key_of is not None else None
                outstanding += 1
                if key is None:
                    start(run_one(message))
                elif key in chains:
                    chains[key].append(message)
                else:
                    chains[key] = deque([message])
                    start(run_chain(key, chains[key]))
            message = None

    def stop_lazy(self) -> None:
        """Withdraw the lazy sources' requests to be started: no reader starts once the loop ends."""
        lazy, self.lazy = self.lazy, None
        for source in lazy or ():
            source.disarm()

    async def close(self) -> None:
        """Cancel the readers and any handler task still running, and let the cancellations land."""
        self.handlers_in_runner = False  # the runner is no longer in a handler: nothing may cancel it now
        self.stop_lazy()
        pending = [*self.readers, *self.tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
