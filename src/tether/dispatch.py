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
  source and read first.
* **No task of its own while nothing waits.** One message at a time, the caller's task reads the first source (the
  client) itself and runs each handler that does not wait, as plain code would: an idle connection whose handlers
  never waited costs no task besides the server's (about 2 KiB less than a reader and a runner).
* **Clean exit.** It returns or raises when ``dispatch`` does, or raises what a source raised; every pending receive
  and running handler task is cancelled and awaited on the way out, so nothing is left half-done.

How: each source is read by one long-lived reader task, so a message costs no task creation (the per-message task
was taken out in the dispatch speed work; see the changelog). A reader hands a message over as soon as its receive
completes, which fixes the message's place in the order, then receives again once the message before it was taken.
With one handler at a time, handlers run one after another in one task of the loop's own (the runner), in a copy of
the caller's context, so context variables and cancellation behave as in plain code; the caller waits for the runner,
and cancelling the caller cancels it. The runner is a task of its own because every message wakes it, and a task's
wake-up resumes each frame it awaits through: the caller sits under the server and the project's routers and
middleware (ten frames in a typical project), the runner under one. A disconnect cancels the task of the handler
in progress and takes that cancellation back (``Task.uncancel``) once the handler has unwound, as ``asyncio.timeout``
does.

Until then (``serve``), the first source has no reader and there is no runner: the caller awaits the client's
receive itself and runs the handler of what it gets there, which for a handler that does not wait (an echo, an
accept) costs no more than a reader's hand-over to a runner would. Two things end that, for the loop's lifetime:

* a handler that waits (a layer call, a database query in a thread, a send the server makes wait): the loop's
  callback scheduled before each such handler runs only once the handler has let the loop run, and starts a reader
  task for the first source, so that a disconnect is seen and cancels the handler (the caller's task, then);
  handlers after it run in the runner;
* a message from another source (a lazy source started, or a layer read from the start) handed over while the caller
  waits on the client: the runner starts at once to handle it, in the context the caller's handlers have left; the
  caller hands the runner what its own receive brings next and gives the first source to a reader task. When the
  runner ends first (its handler raised), it cancels the caller's receive, which takes the cancellation back and
  raises what the runner raised.

Most idle connections (accepted, then nothing) therefore hold the server's task and nothing more; a connection
whose ``connect`` called the layer (``group_add``) holds a reader and the runner, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
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
    loop = _DispatchLoop(consumer_callables, interrupts, lazy, read_first=max_concurrency != 1)
    try:
        if max_concurrency == 1:
            await loop.serve(dispatch)
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


def take_back_cancellation(task: asyncio.Task[Any] | None) -> None:
    """Undo the cancellation of ``task`` that an interruption (or the runner's end) asked for, once the handler (or
    the wait) has unwound.

    From Python 3.11 a task counts cancellation requests, and ``asyncio.timeout`` and task groups read that count:
    it is decremented (``Task.uncancel``), and a cancellation from elsewhere that arrived meanwhile still counts
    and ends the loop. Python 3.10 keeps no count, so catching the ``CancelledError`` was all there was to undo; there
    a cancellation from elsewhere that lands in the same handler as an interruption's is taken back with it (as before
    the caller read its client itself; tests/test_dispatch_control.py skips that test on 3.10).
    """
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None and uncancel() > 0:
        raise asyncio.CancelledError


class _DispatchLoop:
    """The readers, the queue of handed-over messages and the interruption state of one ``await_many_dispatch``."""

    # Slots: the loop reads and writes these on every message, and slot access is the cheaper.
    __slots__ = (
        "caller",
        "caller_woken",
        "cancel_requested",
        "context",
        "dispatch",
        "first",
        "first_reader",
        "first_task",
        "handler_task",
        "handling_interruption",
        "in_handler",
        "interrupts",
        "lazy",
        "loop",
        "pending_interrupts",
        "readers",
        "ready",
        "receiving",
        "runner",
        "tasks",
        "wakeup",
    )

    def __init__(
        self,
        sources: list[Callable[[], Awaitable[Any]]],
        interrupts: Callable[[Any], bool] | None,
        lazy: list[LazySource] | None = None,
        *,
        read_first: bool = True,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        # Handed-over messages in the order their receives completed. At most two per source.
        # A list, not a deque: it holds a few items at most, and an empty deque takes 600 bytes per connection.
        self.ready: list[_Item] = []
        self.wakeup: asyncio.Future[None] | None = None
        # Interrupting messages handed over and not dispatched yet: everything before them is dropped.
        self.pending_interrupts = 0
        # One at a time: the runner, once there is one (see serve), and the task whose handler an interruption
        # cancels (the caller's or the runner), while a handler runs in it (in_handler).
        self.runner: asyncio.Task[None] | None = None
        self.handler_task: asyncio.Task[Any] | None = None
        self.in_handler = False
        # The interrupting message's own handler runs: it is not cancelled.
        self.handling_interruption = False
        # An interruption cancelled the handler's task: the cancellation is taken back once the handler has unwound.
        self.cancel_requested = False
        # Concurrently: the handler tasks running (each cancelled by an interruption); one at a time: none, and no set.
        self.tasks: AbstractSet[asyncio.Task[None]] = _NO_TASKS
        # The first source (the client's): read by the caller itself while it can (serve), else by a reader task.
        self.first = sources[0]
        self.first_reader = _Reader()
        self.first_task: asyncio.Task[None] | None = None
        self.interrupts = interrupts
        # serve's state: the caller's task, whether it waits on the first source itself (receiving), whether the
        # runner woke it from there (caller_woken), the context the runner starts in, the dispatch function.
        self.caller: asyncio.Task[Any] | None = None
        self.receiving = False
        self.caller_woken = False
        self.context: contextvars.Context | None = None
        self.dispatch: Callable[[Any], Awaitable[Any]] | None = None
        self.readers = [
            self.loop.create_task(self.read(source, interrupts if index == 0 else None))
            for index, source in enumerate(sources)
            if index or read_first
        ]
        if read_first and self.readers:
            self.first_task = self.readers[0]
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
        elif self.receiving and self.runner is None:
            self.start_runner()

    def start_runner(self) -> None:
        """Run the handlers in a task of their own from now on: the caller waits on the first source itself (serve),
        and another source handed a message over; or the caller has handed its reading over to a reader task."""
        running = self.one_at_a_time(self.dispatch)  # type: ignore[arg-type]  # set by serve before anything is read
        # A task starts in a copy of the context it is made in (create_task's context= is Python 3.11's).
        context, create_task = self.context, self.loop.create_task
        self.runner = self.handler_task = create_task(running) if context is None else context.run(create_task, running)

    async def wait(self) -> None:
        """Sleep until a reader hands a message over or a handler task ends."""
        self.wakeup = self.loop.create_future()
        try:
            await self.wakeup
        finally:
            self.wakeup = None

    async def read(
        self,
        source: Callable[[], Awaitable[Any]],
        interrupts: Callable[[Any], bool] | None,
        reader: _Reader | None = None,
    ) -> None:
        if reader is None:
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
            elif self.receiving and self.runner is None:
                self.start_runner()
            if ends:
                self.interrupt()
            if reader.waiting >= 2:  # two ahead of the handler: receive again once the older one is taken
                reader.room = create_future()
                await reader.room

    def interrupt(self) -> None:
        """The connection ended: cancel what is running, so the interrupting message is dispatched at once."""
        self.pending_interrupts += 1
        if self.in_handler and not self.handling_interruption and not self.cancel_requested:
            self.cancel_requested = True
            self.handler_task.cancel()  # type: ignore[union-attr]  # set whenever in_handler is
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

    async def serve(self, dispatch: Callable[[Any], Awaitable[Any]]) -> None:
        """One at a time, in the caller's task for as long as that costs nothing: see the module's docstring.

        The caller waits on the first source itself and runs each handler there, until a handler waits (then a
        reader task takes the first source over, so that a disconnect still cancels it) or another source hands a
        message over while the caller waits on the first (then the runner starts, to handle it). From then on the
        runner handles every message, as long as the loop lasts, and the caller waits for it.
        """
        self.dispatch = dispatch
        self.caller = asyncio.current_task()
        self.context = contextvars.copy_context()
        ready, first, interrupts = self.ready, self.first, self.interrupts
        try:
            while self.first_task is None:
                if ready:  # handed over by another source while a handler ran here
                    reader, message, error, ends = ready.pop(0)
                    if error is not None:
                        raise error
                    _taken(reader)  # type: ignore[arg-type]
                    if ends:
                        self.pending_interrupts -= 1
                    elif self.pending_interrupts:
                        continue
                    await self.handle_here(message, ends)
                    message = None
                    continue
                self.receiving = True
                try:
                    message = await first()
                except asyncio.CancelledError:
                    if not self.caller_woken:
                        raise
                    # The runner ended (raised, or was stopped): its outcome is the loop's, raised below.
                    self.caller_woken = False
                    take_back_cancellation(self.caller)
                    break
                except Exception as error:
                    if self.runner is None:
                        raise
                    ready.append((None, None, error, False))  # after what the runner has yet to handle
                    self.wake()
                    break
                finally:
                    self.receiving = False
                ends = interrupts is not None and interrupts(message)
                if self.runner is not None:  # another source's message came meanwhile, and the runner has it
                    self.hand_over(message, ends)
                    message = None
                    self.read_first_in_a_task()
                    break
                await self.handle_here(message, ends)
                message = None
            if self.runner is None:
                # In a task of its own (see the module's docstring): 8% of an echo's cost through a consumer
                # in-process, more under routers and middleware, once handlers wait. Awaiting it, the caller passes
                # its cancellation on to it.
                self.context = None
                self.start_runner()
            await self.runner  # type: ignore[misc]  # started above if not before
        finally:
            self.stop_lazy()
            for task in self.readers:
                task.cancel()

    def hand_over(self, message: Any, ends: bool) -> None:
        """A message of the first source that the caller received itself, for the runner (as ``read`` would)."""
        self.first_reader.waiting += 1
        self.ready.append((self.first_reader, message, None, ends))
        self.wake()
        if ends:
            self.interrupt()

    def read_first_in_a_task(self) -> None:
        """From now on a reader task waits on the first source (once; never after the loop closed)."""
        if self.first_task is None and self.caller is not None and not self.caller.done():
            self.first_task = self.loop.create_task(self.read(self.first, self.interrupts, self.first_reader))
            self.readers.append(self.first_task)

    async def handle_here(self, message: Any, ends: bool) -> None:
        """Run one handler in the caller's task. If it waits, a reader task takes the first source over meanwhile
        (the loop's callback below runs only once the handler has let the loop run), so that a disconnect still
        cancels it; handlers then run in the runner."""
        self.handler_task = self.caller
        self.handling_interruption = ends
        waits = self.loop.call_soon(self.read_first_in_a_task)
        self.in_handler = True
        try:
            await self.dispatch(message)  # type: ignore[misc]  # set by serve
        except asyncio.CancelledError:
            if not self.cancel_requested:
                raise
        finally:
            message = None
            self.in_handler = False
            waits.cancel()
        self.handling_interruption = False
        if self.cancel_requested:
            self.cancel_requested = False
            take_back_cancellation(self.caller)
        if self.first_task is None:
            # A runner started from another source's reader starts in the context the handlers here have left.
            self.context = contextvars.copy_context()

    async def one_at_a_time(self, dispatch: Callable[[Any], Awaitable[Any]]) -> None:
        # next_message() written out: this loop is the hot path of every consumer, and the call and the tuple it
        # returns cost 0.1 µs per message of an echo through a consumer (about 6 µs in all, in-process).
        ready, create_future = self.ready, self.loop.create_future
        try:
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
                # handle_here's steps, written out: a coroutine per message would cost the hot path 0.2 µs.
                self.in_handler = True
                try:
                    await dispatch(message)
                except asyncio.CancelledError:
                    if not self.cancel_requested:
                        raise
                finally:
                    # Nothing may keep a handled message alive while the loop waits for the next one (see the reader).
                    message = None
                    self.in_handler = False
                if ends:
                    self.handling_interruption = False
                if self.cancel_requested:
                    self.cancel_requested = False
                    take_back_cancellation(self.runner)
        finally:
            # Stop the readers now, in the step in which the handler's exception (or StopConsumer) leaves the
            # runner: a reader woken before the caller's clean-up would take a message nobody handles (a worker's
            # next instance finds a message left in its queue, not one taken by the instance that ended).
            self.stop_lazy()
            for task in self.readers:
                task.cancel()
            if self.receiving:  # the caller waits on the first source itself: it has to hear that the loop ended
                self.caller_woken = True
                self.caller.cancel()  # type: ignore[union-attr]  # set by serve

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
        self.in_handler = False  # no handler runs any more: nothing may cancel a task now
        self.stop_lazy()
        pending = [*self.readers, *self.tasks]
        if self.runner is not None and not self.runner.done():  # the caller left serve while the runner ran
            pending.append(self.runner)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
