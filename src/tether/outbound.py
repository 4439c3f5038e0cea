"""The outbound queue of a WebSocket connection: what happens when a client reads slower than it is sent to.

Without it, a consumer's ``send`` awaits the server's. uvicorn's ``send`` waits while its transport's write buffer is
over the high-water mark (64 KiB), which happens once the kernel's socket buffers are full: measured on Linux, a
consumer sending 1 KiB messages to a client that never reads stopped for good at its 3,877th ``send`` (about 4 MB in
the kernel), with the server's memory flat. The cost is not memory but a stuck consumer: its layer channel fills up
(group messages for it are dropped as ``ChannelFull``), it reads nothing from its client, and a sync consumer holds
the one thread all sync consumers of the process share, so a single client that stops reading stops every sync
consumer on the server (other clients' handshakes then time out).

``Outbox.send`` replaces the server's ``send`` for the consumer. It calls the server's ``send`` directly and steps its
coroutine once: when that completes without suspending (a client that keeps up, the common case), the send is done
and it cost no task, lock, timer or queue. When the server's ``send`` suspends, the server is pushing back (the ASGI
specification has no flow-control signal; a ``send`` that cannot finish now is the only one every server gives), so
the rest of that send is finished by a callback on what it waits for (``Outbox.resume``), and later messages wait in
a bounded queue behind it, sent from the same callback in order. The consumer never waits for its client. granian's
``send`` suspends every time, for a hop to its runtime, so there every message takes this path: it costs no task and
no timer per message (a writer task and a timer per message made tether's echo on granian 0.67x of the bare app at
50 clients). When the queue is full, the policy decides:

* ``disconnect``: the client is too slow. Its queue is discarded and it is closed with ``SLOW_CLIENT`` (4008). (Not
  while the send in the server's hands is younger than ``HOP_GRACE``: that is the server passing it on, so the new
  frame waits for it to complete, the one time a consumer's ``send`` waits. A client that reads then paces a handler
  that sends faster than the server writes.) A
  client that does not read cannot receive a close frame either, and uvicorn's ``send`` waits, so after
  ``CLOSE_GRACE`` seconds the connection is aborted (uvicorn: its transport's ``abort()``; a transport ``close()``
  would wait for the unread buffer to drain, forever).
* ``drop_oldest``: the oldest waiting message is dropped to make room.
* ``conflate``: a message replaces the waiting one with the same ``conflate_key`` (in its place in the queue), so
  only the latest value per key waits; when the keys alone fill the queue, the oldest is dropped.

Whatever the policy, a client that took nothing for the stall timeout while messages waited (the keepalive's
interval + timeout: the time after which a silent peer counts as dead) is closed as for ``disconnect``. One timer per
connection watches for that: armed when the client falls behind, it checks, when it fires, since when the send in the
server's hands has waited, and is armed again for that send's deadline, or not at all once the client caught up.

Only ``websocket.send`` messages are dropped or conflated; a close always keeps its place. Each drop, conflation and
slow-client disconnect is counted in this module's counters (``snapshot()``) and logged once per connection.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Hashable
from types import CoroutineType
from typing import Any, Protocol

from tether.limits import SLOW_CLIENT
from tether.types import Message, Send

__all__ = ["CLOSE_GRACE", "HOP_GRACE", "Outbox", "SendWatcher", "SentCounts", "State", "abort_connection", "snapshot"]

logger = logging.getLogger("tether.outbound")

#: Seconds a slow client is given to take the close frame (the server's ``send`` to accept it) before the connection
#: is aborted: room for a client that reads, slowly, to see 4008; a client that does not read is gone after this.
CLOSE_GRACE = 2.0

#: Seconds the send in the server's hands may have waited and still count as the server's own hop, not a client
#: falling behind: under ``disconnect``, a frame that finds the queue full waits for that send until it has waited this
#: long, rather than closing the client at once. granian's ``send`` always suspends (a hop to its runtime, then the
#: write), so a handler sending more than ``outbound_queue_size`` frames without letting the loop run filled the queue
#: before granian had finished one, and a client that read every frame was closed with 4008 (seen with 258 frames).
HOP_GRACE = 0.1

#: Per-process counters, since the process started (``snapshot()``).
_counters = {
    # Connections whose server pushed back at least once: their messages started to wait in the queue.
    "backlogs": 0,
    # Waiting messages dropped to make room (drop_oldest, and conflate when the keys alone fill the queue).
    "messages_dropped": 0,
    # Waiting messages replaced by a later one with the same conflate_key.
    "messages_conflated": 0,
    # Connections closed with SLOW_CLIENT because their queue was full.
    "slow_client_disconnects": 0,
    # Messages waiting in the queue of a connection closed as too slow: never sent.
    "messages_discarded": 0,
}


def snapshot() -> dict[str, int]:
    """A copy of this process's slow-client counters, for metrics: each only grows while the process runs.

    ``backlogs`` (connections that had to queue), ``messages_dropped``, ``messages_conflated``,
    ``slow_client_disconnects`` and ``messages_discarded`` (left in the queue of a connection closed as too slow).
    """
    return dict(_counters)


class SentCounts(Protocol):
    """Where a watched outbox counts the frames a consumer sends (``tether.metrics``' per-class counts)."""

    sent_text: int
    sent_binary: int


class SendWatcher(Protocol):
    """What watches a connection's sends while metrics are on (``tether.metrics.observe``): the outbox counts each
    frame in ``counts`` itself, an attribute increment rather than a call (a wrapper around ``send`` cost about 3,000
    instructions per frame, measured with callgrind), and hands every other message, rare by nature (the handshake's
    answer, the close), to ``answered``."""

    @property
    def counts(self) -> SentCounts: ...

    def answered(self, message: Message) -> None: ...


class State(enum.Enum):
    """Where an outbox is: sending directly, queueing behind a send the server holds, closing a slow client, or done."""

    DIRECT = "direct"
    QUEUEING = "queueing"
    CLOSING = "closing"
    CLOSED = "closed"


_DIRECT = State.DIRECT
_QUEUEING = State.QUEUEING


def _first_step(sending: Any) -> tuple[Any, Any] | None:
    """Step a server's ``send`` once: ``None`` if it completed, else its iterator and what it waits for.

    A coroutine (uvicorn's send) or an awaitable whose ``__await__`` is a plain iterator (granian's); the iterator
    is what ``yield from`` would step (``next()`` takes no coroutine).
    """
    try:
        if type(sending) is CoroutineType:
            return sending.__await__(), sending.send(None)
        steps = sending.__await__()
        return steps, next(steps)
    except StopIteration:
        return None


def _throw_into(sending: Any, error: BaseException) -> Any:
    """Throw the error (or the cancellation) of what a suspended send waited for into it, as a task does; what it
    waits for next, or ``StopIteration``. A plain iterator (granian's) has no ``throw``: PEP 380 raises it here."""
    throw = getattr(sending, "throw", None)
    if throw is None:
        raise error
    return throw(error)


#: The queue and the conflation keys of every outbox whose client never fell behind: always empty (nothing is added to
#: them before ``first_backlog`` gives the outbox its own).
_NO_QUEUE: deque[list[Any]] = deque()
_NO_KEYS: dict[Hashable, list[Any]] = {}


class Outbox:
    """The outgoing side of one WebSocket connection: ``send`` it messages; it never waits for the client.

    ``policy`` is ``"disconnect"``, ``"drop_oldest"`` or ``"conflate"`` (checked by the caller), ``size`` the most
    messages that may wait, ``conflate_key`` gives a message's key under ``conflate`` (``None``: never conflated),
    ``name`` names the consumer in the log, and ``stall_timeout`` gives the seconds after which a client that took
    nothing while messages waited is closed; ``watcher``, while metrics are on, counts what the consumer sends. The
    callables are read when the client first falls behind. ``close()`` abandons the send in the server's hands, if
    any, and must be awaited when the connection ends.
    """

    # Slots, and no queue until the client first falls behind: one of these lives as long as each connection.
    __slots__ = (
        "chosen", "client_gone", "closer", "conflate_key", "keyed", "limit", "logged", "name", "policy", "queue",
        "room", "sending", "server_send", "size", "stall", "stall_timeout", "state", "waiting", "waiting_since",
        "watchdog", "watcher",
    )  # fmt: skip

    def __init__(
        self,
        server_send: Send,
        *,
        policy: Callable[[], str],
        size: Callable[[], int],
        conflate_key: Callable[[Message], Hashable | None],
        name: Callable[[], str],
        stall_timeout: Callable[[], float],
        watcher: SendWatcher | None = None,
    ) -> None:
        self.server_send = server_send
        #: Counts the messages sent while metrics are on (``SendWatcher``); ``None`` otherwise.
        self.watcher = watcher
        self.state = State.DIRECT
        # Read when the client first falls behind: reading settings per message would cost the fast path.
        self.policy = policy
        self.size = size
        self.conflate_key = conflate_key
        self.name = name
        self.stall_timeout = stall_timeout
        # While QUEUEING: the server's send that suspended (its iterator), what it waits for (a future, or the handle
        # of the loop turn a bare yield asked for), and the loop time since which the client has taken nothing.
        self.sending: Any = None
        self.waiting: Any = None
        self.waiting_since = 0.0
        self.watchdog: asyncio.TimerHandle | None = None
        # Done when the queue may have room again (a send completed, or the connection closed): see wait_for_room.
        self.room: asyncio.Future[None] | None = None
        # Waiting messages as [key, message]: a conflated message replaces the message of the entry in place. Empty
        # and shared until the client first falls behind (an empty deque is 600 bytes, for most connections unused).
        self.queue: deque[list[Any]] = _NO_QUEUE
        self.keyed: dict[Hashable, list[Any]] = _NO_KEYS
        self.closer: asyncio.Task[None] | None = None
        self.logged = False
        # A send raised OSError: the server's (the client has gone away), or ours after the connection was closed.
        self.client_gone = False
        self.limit = 0
        self.chosen = ""  # the policy, once read
        self.stall = 0.0

    async def send(self, message: Message) -> None:
        """Send ``message`` now if the server takes it at once; otherwise queue it under the policy.

        Raises the server's ``OSError`` when the client has gone away, and ``ConnectionResetError`` after the
        connection was closed as too slow (the handler then ends quietly, as for a departed client).
        """
        state = self.state
        if state is not _DIRECT and len(self.queue) >= self.limit and self.chosen == "disconnect":
            await self.wait_for_room()  # before counting: the connection may be closed when it returns
            state = self.state
        watcher = self.watcher
        if watcher is not None and (state is _DIRECT or state is _QUEUEING):
            # ConnectionWatch.sent written out (a call per frame). Counted as the consumer sends it: a frame later
            # dropped for a slow client counts among the drops too; one refused because the connection was closed
            # (ConnectionResetError, from enqueue) is not counted.
            if message.get("type") == "websocket.send":
                if message.get("text") is not None:
                    watcher.counts.sent_text += 1
                else:
                    watcher.counts.sent_binary += 1
            else:
                watcher.answered(message)
        if state is not _DIRECT:
            self.enqueue(message)
            return
        sending: Any = self.server_send(message)
        try:
            # _first_step written out: every message comes here, and the call cost 1,200 instructions per message
            # (3% of an echo through the consumer; callgrind, uvloop).
            if type(sending) is CoroutineType:
                waiting = sending.send(None)
                sending = sending.__await__()
            else:
                sending = sending.__await__()
                waiting = next(sending)
        except StopIteration:
            return
        except OSError:  # the client has gone away: the handler that sent ends quietly (tether.consumer)
            self.client_gone = True
            raise
        if not self.chosen:
            self.first_backlog()
        self.state = State.QUEUEING
        self.suspended(sending, waiting)

    async def wait_for_room(self) -> None:
        """The queue is full under ``disconnect``: wait while the send in the server's hands is younger than
        ``HOP_GRACE`` (the server is passing it on, not the client falling behind), until it completes and makes room.

        A client that is really behind has had that send waiting for longer, and is closed at once, as before; one
        that reads paces a handler that sends faster than the server writes, by one hop per frame.
        """
        loop = asyncio.get_running_loop()
        while len(self.queue) >= self.limit and self.state is State.QUEUEING:
            deadline = self.waiting_since + HOP_GRACE
            if loop.time() >= deadline:
                return
            room = self.room
            if room is None or room.done():
                room = self.room = loop.create_future()
            timer = loop.call_at(deadline, _set_done, room)
            try:
                # Shielded: several handlers may wait on this future (max_concurrency), and a task cancelled while it
                # awaits a future cancels that future, which would end every other waiter with a CancelledError.
                await asyncio.shield(room)
            finally:
                timer.cancel()

    def made_room(self) -> None:
        """Wake the frames waiting for room (``wait_for_room``), which look again."""
        room, self.room = self.room, None
        if room is not None and not room.done():
            room.set_result(None)

    def first_backlog(self) -> None:
        """The server pushed back for the first time on this connection: read the settings, make the queue.

        Once per connection: on granian every send suspends, and reading three settings per message cost
        microseconds each.
        """
        self.limit = self.size()
        self.chosen = self.policy()
        self.stall = self.stall_timeout()
        self.queue, self.keyed = deque(), {}
        _counters["backlogs"] += 1

    def suspended(self, sending: Any, waiting: Any, again: bool = False) -> None:
        """The server's send suspended on ``waiting``: have it resumed when that is done, by a callback.

        What a task does with what its coroutine yields (a future gets a done callback, a bare ``yield`` a turn of the
        loop), without the task: on granian every send suspends once, for a hop to its runtime, and a writer task and
        a timer per message cost more than the rest of tether's work on an echoed frame. ``again``: the same send
        suspended once more, so the client has still taken nothing since it first did.
        """
        loop = asyncio.get_running_loop()
        self.sending = sending
        if not again:
            self.waiting_since = loop.time()
        if waiting is None:
            self.waiting = loop.call_soon(self.resume, None)
        elif getattr(waiting, "_asyncio_future_blocking", False):
            waiting._asyncio_future_blocking = False
            self.waiting = waiting
            waiting.add_done_callback(self.resume)
        else:  # a task refuses it too
            self.fail(RuntimeError(f"the server's send yielded {waiting!r}, which is neither a future nor None"))
            return
        # One timer while the client is behind, not one per backlog: it reads waiting_since when it fires.
        if self.watchdog is None:
            self.watchdog = loop.call_at(self.waiting_since + self.stall, self.check_stall)

    def resume(self, done: Any) -> None:
        """What the suspended send waited for is done: step it on; once it completed, send the waiting messages."""
        sending = self.sending
        if sending is None:  # abandoned (close, or a slow client's disconnect) after this callback was scheduled
            return
        self.sending = self.waiting = None
        try:
            try:
                if done is not None:
                    done.result()
            except BaseException as error:  # the send's to handle, as in a task
                waiting = _throw_into(sending, error)
            else:
                waiting = next(sending)
        except StopIteration:
            if self.queue:
                self.write_queued()
            else:
                self.state = State.DIRECT
            self.made_room()
            return
        except (Exception, asyncio.CancelledError) as error:
            self.fail(error)
            return
        self.suspended(sending, waiting, again=True)

    def write_queued(self) -> None:
        """Send the waiting messages in order until one suspends; go back to direct sends once none waits."""
        queue = self.queue
        while queue:
            key, message = queue.popleft()
            if key is not None:
                del self.keyed[key]
            try:
                suspended = _first_step(self.server_send(message))
            except (Exception, asyncio.CancelledError) as error:
                self.fail(error)
                return
            if suspended is not None:
                self.suspended(*suspended)
                return
        self.state = State.DIRECT

    def fail(self, error: BaseException) -> None:
        """The server's send raised: the client went away (``OSError``; its disconnect event is on its way), the
        server cancelled the send, or it refused the message (logged). The queue is dropped: nothing more is sent."""
        if not isinstance(error, (OSError, asyncio.CancelledError)):
            logger.error(
                "%s: the server refused a queued message; the rest of the queue is dropped.",
                self.name(),
                exc_info=error,
            )
        self.stop()

    def check_stall(self) -> None:
        """A client that took nothing for the stall timeout while frames waited is gone: close it, whatever the policy.

        Without this, a client that stops reading under ``drop_oldest`` or ``conflate`` would keep its connection
        for good: uvicorn's keepalive closes a transport by waiting for the unread data to be written. The timer is
        armed when the client falls behind and re-armed from here while it stays behind, to the time it would have
        been stalled for the timeout.
        """
        self.watchdog = None
        if self.state is not State.QUEUEING:
            return  # caught up: the next backlog arms it again
        loop = asyncio.get_running_loop()
        deadline = self.waiting_since + self.stall
        if loop.time() < deadline:
            self.watchdog = loop.call_at(deadline, self.check_stall)
            return
        self.disconnect_slow_client(f"it took nothing for {self.stall:g} s")

    def enqueue(self, message: Message) -> None:
        state = self.state
        if state is State.CLOSED or state is State.CLOSING:
            self.client_gone = True
            raise ConnectionResetError(f"{self.name()}: the connection was closed; this message was not sent.")
        droppable = message.get("type") == "websocket.send"
        if droppable and self.chosen == "conflate":
            key = self.conflate_key(message)
            if key is not None:
                entry = self.keyed.get(key)
                if entry is not None:
                    entry[1] = message
                    self.note("messages_conflated")
                    return
                entry = [key, message]
                self.keyed[key] = entry
                self.queue.append(entry)
                self.make_room()
                return
        self.queue.append([None, message])
        if droppable:
            self.make_room()

    def make_room(self) -> None:
        """Apply the policy once the queue holds more than its limit (the message just queued included)."""
        queue = self.queue
        if len(queue) <= self.limit:
            return
        if self.chosen == "disconnect":
            self.disconnect_slow_client(f"{self.limit} messages are waiting (outbound_queue_size)")
            return
        # The oldest frame goes; a close (or any other event) keeps its place, and is only ever first or last.
        for index, (key, message) in enumerate(queue):
            if message.get("type") == "websocket.send":
                del queue[index]
                if key is not None:
                    del self.keyed[key]
                self.note("messages_dropped")
                return

    def note(self, counter: str) -> None:
        """Count a drop or a conflation; log the first of them on this connection."""
        _counters[counter] += 1
        if not self.logged:
            self.logged = True
            logger.warning(
                "%s: the client reads slower than it is sent to and %d messages are waiting (outbound_queue_size); "
                "slow_client_policy %r: %s from now on, counted in tether.outbound.snapshot() and not logged again "
                "for this connection.",
                self.name(),
                self.limit,
                self.chosen,
                "the oldest waiting message is dropped"
                if self.chosen == "drop_oldest"
                else "only the latest message per conflate_key waits",
            )

    def disconnect_slow_client(self, why: str) -> None:
        """Discard the queue, abandon the send in the server's hands and close the connection with ``SLOW_CLIENT``
        in a task of its own."""
        _counters["slow_client_disconnects"] += 1
        logger.warning(
            "%s: the client reads slower than it is sent to and %s; closing with %d (slow_client_policy %r).",
            self.name(),
            why,
            SLOW_CLIENT,
            self.chosen,
        )
        # The waiting messages, and the one in the server's hands when it pushed back (there always is one).
        _counters["messages_discarded"] += len(self.queue) + 1
        self.queue.clear()
        self.keyed.clear()
        self.state = State.CLOSING
        self.stop_watchdog()
        self.abandon()
        self.made_room()
        self.closer = asyncio.get_running_loop().create_task(self.close_slow_client())

    def abandon(self) -> None:
        """Give up the send in the server's hands, as cancelling a task that waits in it would: what it waits for is
        cancelled (granian then drops the write) and a coroutine's send is closed, so it unwinds now."""
        sending, waiting = self.sending, self.waiting
        self.sending = self.waiting = None
        if waiting is not None:
            waiting.cancel()
        close = getattr(sending, "close", None)
        if close is not None:
            close()

    def stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def stop(self) -> None:
        self.stop_watchdog()
        self.abandon()
        self.state = State.CLOSED
        self.queue.clear()
        self.keyed.clear()
        self.made_room()

    async def close_slow_client(self) -> None:
        """Close with ``SLOW_CLIENT`` if the server takes the close frame within ``CLOSE_GRACE``; else abort."""
        self.state = State.CLOSED
        close = {"type": "websocket.close", "code": SLOW_CLIENT, "reason": "client too slow"}
        if self.watcher is not None:
            # Counted as the consumer's own close would be: the connection ended with this code, also when the
            # client never takes the frame and the connection is aborted (the watcher sees the server's send no more).
            self.watcher.answered(close)
        try:
            await asyncio.wait_for(self.server_send(close), CLOSE_GRACE)
        except (asyncio.TimeoutError, OSError):
            if not abort_connection(self.server_send):
                logger.warning(
                    "%s: the slow client's connection could not be aborted (the server's transport is not "
                    "reachable); it ends when the server closes it.",
                    self.name(),
                )

    async def close(self) -> None:
        """Abandon the send in the server's hands, cancel the closer if any and wait for it: the connection ended."""
        self.stop()
        closer, self.closer = self.closer, None
        if closer is not None and not closer.done():
            closer.cancel()
            await asyncio.gather(closer, return_exceptions=True)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def abort_connection(server_send: Send) -> bool:
    """Abort the TCP connection behind a server's ``send``, dropping what it had buffered; ``True`` if it could.

    ASGI has no way to do this. uvicorn's ``send`` is a method of its protocol object, which holds its asyncio
    transport as ``transport``; ``abort()`` on it drops the buffer and the connection at once (tests/test_outbound.py
    checks this against the installed uvicorn). Other servers: ``False``.
    """
    protocol = getattr(server_send, "__self__", None)
    transport = getattr(protocol, "transport", None)
    abort = getattr(transport, "abort", None)
    if not callable(abort):
        return False
    abort()
    return True
