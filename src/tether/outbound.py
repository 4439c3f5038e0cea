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
the rest of that send is handed to a writer task and later messages wait in a bounded queue behind it. The consumer
never waits for its client. When the queue is full, the policy decides:

* ``disconnect``: the client is too slow. Its queue is discarded and it is closed with ``SLOW_CLIENT`` (4008). A
  client that does not read cannot receive a close frame either, and uvicorn's ``send`` waits, so after
  ``CLOSE_GRACE`` seconds the connection is aborted (uvicorn: its transport's ``abort()``; a transport ``close()``
  would wait for the unread buffer to drain, forever).
* ``drop_oldest``: the oldest waiting message is dropped to make room.
* ``conflate``: a message replaces the waiting one with the same ``conflate_key`` (in its place in the queue), so
  only the latest value per key waits; when the keys alone fill the queue, the oldest is dropped.

Whatever the policy, a client that took nothing for the stall timeout while messages waited (the keepalive's
interval + timeout: the time after which a silent peer counts as dead) is closed as for ``disconnect``.

Only ``websocket.send`` messages are dropped or conflated; a close always keeps its place. Each drop, conflation and
slow-client disconnect is counted in this module's counters (``snapshot()``) and logged once per connection.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Generator, Hashable
from types import CoroutineType
from typing import Any, Protocol

from tether.limits import SLOW_CLIENT
from tether.types import Message, Send

__all__ = ["CLOSE_GRACE", "Outbox", "SendWatcher", "SentCounts", "State", "abort_connection", "snapshot"]

logger = logging.getLogger("tether.outbound")

#: Seconds a slow client is given to take the close frame (the server's ``send`` to accept it) before the connection
#: is aborted: room for a client that reads, slowly, to see 4008; a client that does not read is gone after this.
CLOSE_GRACE = 2.0

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
    """Where an outbox is: sending directly, queueing behind a writer, closing a slow client, or done."""

    DIRECT = "direct"
    QUEUEING = "queueing"
    CLOSING = "closing"
    CLOSED = "closed"


_DIRECT = State.DIRECT
_QUEUEING = State.QUEUEING


class _Resumed:
    """The rest of a suspended ``send``, awaitable from another task: ``yield from`` that starts where it stopped.

    A coroutine stepped once by hand yielded what it waits for (a future, or ``None`` to let the loop run once). The
    writer task awaits this object, which hands that value to the task and then passes what the task sends or throws
    on to the coroutine, exactly as ``yield from`` does (PEP 380), until the coroutine returns.
    """

    __slots__ = ("steps", "waiting")

    def __init__(self, steps: Generator[Any, Any, Any], waiting: Any) -> None:
        self.steps = steps
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        steps, waiting = self.steps, self.waiting
        self.waiting = None
        while True:
            try:
                value = yield waiting
            except BaseException as error:  # a cancellation of the writer task reaches the server's send
                throw = getattr(steps, "throw", None)
                if throw is None:  # an awaitable that is a plain iterator (granian's): PEP 380 raises here
                    raise
                try:
                    waiting = throw(error)
                except StopIteration:
                    return
            else:
                try:
                    waiting = _step(steps, value)
                except StopIteration:
                    return


def _step(steps: Any, value: Any) -> Any:
    """Resume an awaitable's iterator as ``yield from`` does: ``next()`` for ``None`` (all a plain iterator takes, as
    granian's ``send`` awaitable is), ``send()`` otherwise."""
    return next(steps) if value is None else steps.send(value)


#: The queue and the conflation keys of every outbox whose client never fell behind: always empty (nothing is added to
#: them before ``start_queueing`` gives the outbox its own).
_NO_QUEUE: deque[list[Any]] = deque()
_NO_KEYS: dict[Hashable, list[Any]] = {}


class Outbox:
    """The outgoing side of one WebSocket connection: ``send`` it messages; it never waits for the client.

    ``policy`` is ``"disconnect"``, ``"drop_oldest"`` or ``"conflate"`` (checked by the caller), ``size`` the most
    messages that may wait, ``conflate_key`` gives a message's key under ``conflate`` (``None``: never conflated),
    ``name`` names the consumer in the log, and ``stall_timeout`` gives the seconds after which a client that took
    nothing while messages waited is closed; ``watcher``, while metrics are on, counts what the consumer sends. The
    callables are read when the client first falls behind. ``close()``
    cancels the writer and must be awaited when the connection ends.
    """

    # Slots, and no queue until the client first falls behind: one of these lives as long as each connection.
    __slots__ = (
        "chosen", "client_gone", "closer", "conflate_key", "keyed", "limit", "logged", "name", "policy", "progress",
        "queue", "server_send", "size", "stall", "stall_timeout", "state", "watchdog", "watcher", "writer",
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
        # Sends the writer completed, and the timer that checks it completes some (see check_stall).
        self.progress = 0
        self.watchdog: asyncio.TimerHandle | None = None
        # Waiting messages as [key, message]: a conflated message replaces the message of the entry in place. Empty
        # and shared until the client first falls behind (an empty deque is 600 bytes, for most connections unused).
        self.queue: deque[list[Any]] = _NO_QUEUE
        self.keyed: dict[Hashable, list[Any]] = _NO_KEYS
        self.writer: asyncio.Task[None] | None = None
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
        watcher = self.watcher
        if watcher is not None and (self.state is _DIRECT or self.state is _QUEUEING):
            # Counted as the consumer sends it: a frame later dropped for a slow client counts among the drops too;
            # one refused because the connection was closed (ConnectionResetError, from enqueue) is not counted.
            if message.get("type") == "websocket.send":
                if message.get("text") is not None:
                    watcher.counts.sent_text += 1
                else:
                    watcher.counts.sent_binary += 1
            else:
                watcher.answered(message)
        if self.state is not _DIRECT:
            self.enqueue(message)
            return
        sending: Any = self.server_send(message)
        try:
            # A coroutine's first step (uvicorn's send), or a plain iterator's (granian's send awaitable).
            if type(sending) is CoroutineType:
                waiting = sending.send(None)
            else:
                sending = sending.__await__()
                waiting = next(sending)
        except StopIteration:
            return
        except OSError:  # the client has gone away: the handler that sent ends quietly (tether.consumer)
            self.client_gone = True
            raise
        # The rest is stepped as `yield from` would, from the coroutine's iterator (next() takes no coroutine).
        steps = sending.__await__() if type(sending) is CoroutineType else sending
        self.start_queueing(_Resumed(steps, waiting))

    def start_queueing(self, rest: _Resumed) -> None:
        """The server pushed back: finish the suspended send in a writer task; later messages queue behind it."""
        if not self.chosen:
            # Read once per connection, when the client first falls behind: a server whose every send suspends
            # (granian's) comes here for each message, and reading settings costs microseconds each.
            self.limit = self.size()
            self.chosen = self.policy()
            self.stall = self.stall_timeout()
        if self.queue is _NO_QUEUE:
            self.queue, self.keyed = deque(), {}
        self.state = State.QUEUEING
        _counters["backlogs"] += 1
        loop = asyncio.get_running_loop()
        self.writer = loop.create_task(self.write(rest))
        self.watchdog = loop.call_later(self.stall, self.check_stall, self.progress, self.stall)

    def check_stall(self, progress: int, stall: float) -> None:
        """A client that took nothing for ``stall`` seconds while frames waited is gone: close it, whatever the policy.

        Without this, a client that stops reading under ``drop_oldest`` or ``conflate`` would keep its connection
        for good: uvicorn's keepalive closes a transport by waiting for the unread data to be written.
        """
        self.watchdog = None
        if self.state is not State.QUEUEING:
            return
        if self.progress == progress:
            self.disconnect_slow_client(f"it took nothing for {stall:g} s")
            return
        self.watchdog = asyncio.get_running_loop().call_later(stall, self.check_stall, self.progress, stall)

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
        """Discard the queue, stop the writer and close the connection with ``SLOW_CLIENT`` in a task of its own."""
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
        writer = self.writer
        if writer is not None:
            writer.cancel()  # it waits in the server's send
        self.closer = asyncio.get_running_loop().create_task(self.close_slow_client(writer))

    async def write(self, rest: _Resumed) -> None:
        """The writer: finish the suspended send, then send the waiting messages in order, then go back to direct."""
        queue = self.queue
        try:
            await rest
            self.progress += 1
            while queue:
                key, message = queue.popleft()
                if key is not None:
                    del self.keyed[key]
                await self.server_send(message)
                message = None
                self.progress += 1
        except OSError:  # the client went away; the disconnect event is on its way
            self.stop()
            return
        except Exception:
            logger.exception("%s: the server refused a queued message; the rest of the queue is dropped.", self.name())
            self.stop()
            return
        self.writer = None
        self.state = State.DIRECT
        self.stop_watchdog()

    def stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def stop(self) -> None:
        self.stop_watchdog()
        self.state = State.CLOSED
        self.queue.clear()
        self.keyed.clear()

    async def close_slow_client(self, writer: asyncio.Task[None] | None) -> None:
        """Close with ``SLOW_CLIENT`` if the server takes the close frame within ``CLOSE_GRACE``; else abort."""
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)
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
        """Cancel the writer and the closer, if any, and wait for them: the connection has ended."""
        self.stop()
        tasks = [task for task in (self.writer, self.closer) if task is not None and not task.done()]
        self.writer = self.closer = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
