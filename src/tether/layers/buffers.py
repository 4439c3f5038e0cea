"""Per-channel buffers in one process: bounded queues of messages, and the receivers waiting on them.

Every layer keeps one of these. The in-memory layer puts what ``send`` and ``group_send`` deliver here; the Redis
layers put here what their receive loops read from Redis, so a ``receive()`` waits on a local future with no Redis
round trip of its own. Each queue is bounded by its channel's capacity and drops messages past their expiry, which
is measured on the clock the layer gives (wall-clock milliseconds for Redis, whose frames carry expiry times between
machines; the monotonic clock in memory), so tests can give one of their own. Waiters may live on other event loops
(``async_to_sync`` from a thread): they are woken on their own loop, and a message handed to a waiter that was
cancelled meanwhile goes back to the front.

A consumer that waits for nothing in particular need not wait at all: ``watch(channel, callback)`` calls it back once
a message is queued for the channel, and only then does it start receiving (``tether.dispatch.LazySource``), so an
idle connection costs a dict entry here instead of a slot, a future and a reader task. The message stays queued
until that receive takes it, so nothing sent before the receiver starts is lost.

A channel's slot stays while it is idle (a consumer that receives in a loop would otherwise allocate one per
message) and is forgotten by ``sweep()``, which the layers call every few seconds.

Threads: every change is made under one lock, except the hot path of a consumer waiting for its next message (in
``next_or_waiter``: a known channel with nothing queued), which only appends its future to the slot's deque (atomic
under the GIL) and then looks again. Whoever changes a slot under the lock looks again too: a delivery that queued a
message checks for waiters that arrived meanwhile, and dropping an idle slot puts it back if a waiter arrived
meanwhile. So one side always sees the other, and a queued message never sits beside a waiting receiver.

The lock-free path is kept because it was measured to pay: waking the 200 members of a group through the Redis layer
costs 4.29M instructions with it and 5.33M with every receive taking the lock (callgrind, the same run), and
``group_send`` to 1,000 members is the benchmark whose target has the thinnest margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from asyncio import get_running_loop
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal, overload

from tether.layers.handover import hand_over, running_loop
from tether.layers.messages import clone_message
from tether.types import Message

__all__ = ["ChannelBuffers"]

_created = itertools.count()

#: Not looked up yet (None is a valid answer: no loop is running).
_UNKNOWN: Any = object()


class _Slot:
    __slots__ = ("created", "dropped", "queue", "waiters")

    def __init__(self) -> None:
        self.queue: deque[tuple[float, Message]] = deque()
        self.waiters: deque[asyncio.Future[Message]] = deque()
        self.created = next(_created)
        self.dropped = False  # no longer the channel's slot (see _drop_if_idle)

    def idle(self) -> bool:
        return not self.queue and not self.waiters


class ChannelBuffers:
    """Bounded per-channel queues with waiting receivers.

    ``capacity_of(channel)`` bounds each queue; ``on_expired(channel)`` is called for every message dropped because
    its expiry passed; ``on_full(channel, full)`` is called when a queue reaches its capacity (``True``) and when it
    drops below it again (``False``). ``clock()`` tells the time that expiry times are given in, and ``hold`` (in the
    same unit) is how long a message put back by a cancelled receiver may wait.
    """

    def __init__(
        self,
        capacity_of: Callable[[str], int],
        on_expired: Callable[[str], None],
        on_full: Callable[[str, bool], None] | None = None,
        *,
        clock: Callable[[], float],
        hold: float,
        sweep_every: float = 5.0,
    ) -> None:
        self._capacity_of = capacity_of
        self._on_expired = on_expired
        self._on_full = on_full
        self._clock = clock
        self._hold = hold
        self._sweep_every = sweep_every
        self._next_sweep = time.monotonic() + sweep_every
        self._slots: dict[str, _Slot] = {}
        #: Channels nobody receives on yet: channel -> (loop, callback) for the first message queued (``watch``).
        self._watchers: dict[str, tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = {}
        self._lock = threading.RLock()

    # Putting messages in ------------------------------------------------------------------------------------------

    def deliver(self, channel: str, message: Message, expires_at: float) -> bool:
        """Hand ``message`` to a waiting receiver or queue it; False (and nothing kept) when the queue is full."""
        return not self.deliver_many([channel], message, expires_at)

    def deliver_many(self, channels: list[str], message: Message, expires_at: float) -> list[str]:
        """Deliver ``message`` to each of ``channels``, each its own copy (the last gets ``message`` itself); returns
        the channels that refused it because their queue was full."""
        refused: list[str] = []
        running: Any = _UNKNOWN  # the running loop, looked up at the first waiter (a queued message needs none)
        slots = self._slots
        watchers = self._watchers
        last = channels[-1] if channels else None
        # A message whose values are all immutable (the usual flat event) is copied with dict.copy().
        flat = len(channels) > 1 and not any(type(value) in (dict, list) for value in message.values())
        copy_of = dict.copy if flat else clone_message
        lock = self._lock
        lock.acquire()  # not `with`: acquire() and release() cost half as much (callgrind), once per message
        try:
            for channel in channels:
                copy = message if channel is last else copy_of(message)
                slot = slots.get(channel)
                if slot is None:
                    slot = slots[channel] = _Slot()
                waiters = slot.waiters
                while waiters:
                    waiter = waiters.popleft()
                    if waiter.done():
                        continue
                    # Written so that the usual member (on the running loop, once that is known) costs one test.
                    if waiter.get_loop() is not running:
                        if running is _UNKNOWN:
                            running = running_loop()
                        if waiter.get_loop() is not running:
                            hand_over(waiter, copy, running, self._giver_back(channel, expires_at))
                            break
                    waiter.set_result(copy)
                    break
                else:
                    queue = slot.queue
                    capacity = self._capacity_of(channel)
                    if len(queue) >= capacity:
                        self._drop_expired(channel, queue)  # expired messages hold no place
                    if len(queue) >= capacity:
                        refused.append(channel)
                        if self._on_full is not None:
                            self._on_full(channel, True)
                    else:
                        queue.append((expires_at, copy))
                        if len(queue) == capacity and self._on_full is not None:
                            self._on_full(channel, True)
                        if waiters:  # a receiver started waiting meanwhile, without the lock
                            self._pair_up(channel, slot)
                        elif channel in watchers:
                            self._wake(channel, running)
        finally:
            lock.release()
        return refused

    def put_back(self, channel: str, message: Message, expires_at: float) -> None:
        """Put ``message`` first in line on ``channel`` (capacity aside): a message that goes round again."""
        self._put_back(channel, message, expires_at)

    def _giver_back(self, channel: str, expires_at: float) -> Callable[[Message], None]:
        """What ``hand_over`` calls when the receiver is gone: the message goes back first in line."""
        return lambda message: self._put_back(channel, message, expires_at)

    def _put_back(self, channel: str, message: Message, expires_at: float) -> None:
        """Return a message that a cancelled receiver did not take to the front of its queue (capacity aside)."""
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None:
                slot = self._slots[channel] = _Slot()
            while slot.waiters:
                waiter = slot.waiters.popleft()
                if not waiter.done():
                    hand_over(waiter, message, running_loop(), self._giver_back(channel, expires_at))
                    return
            slot.queue.appendleft((expires_at, message))
            if slot.waiters:  # a receiver started waiting meanwhile, without the lock
                self._pair_up(channel, slot)
            elif channel in self._watchers:
                self._wake(channel, _UNKNOWN)

    def _pair_up(self, channel: str, slot: _Slot) -> None:
        """Hand queued messages to waiting receivers while there are both (the caller holds the lock)."""
        waiters = slot.waiters
        while slot.queue and waiters:
            if waiters[0].done():
                waiters.popleft()
                continue
            entry = self._pop_entry(channel, slot)
            if entry is None:
                return
            hand_over(waiters.popleft(), entry[1], running_loop(), self._giver_back(channel, entry[0]))

    def _drop_if_idle(self, channel: str, slot: _Slot) -> None:
        """Forget ``slot`` when it is idle (the caller holds the lock). A receiver may append to it without the
        lock, so look again after dropping it, and keep it if one did."""
        if slot.idle() and self._slots.get(channel) is slot:
            slot.dropped = True
            del self._slots[channel]
            if not slot.idle():
                self._slots[channel] = slot  # nobody else adds slots without the lock: the name is still free
                slot.dropped = False

    # Receivers that start late ------------------------------------------------------------------------------------

    def watch(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, on the running loop, when a message is queued for ``channel`` (soon, if one is
        queued now); the caller then receives it. ``unwatch(channel)`` withdraws the request."""
        loop = get_running_loop()
        with self._lock:
            slot = self._slots.get(channel)
            if slot is not None and slot.queue:
                loop.call_soon(callback)
            else:
                self._watchers[channel] = (loop, callback)

    def unwatch(self, channel: str) -> None:
        # Under the lock: a delivery from another thread (``async_to_sync``) tests for the watcher and then pops it,
        # and an unwatch in between would make that pop raise KeyError to the sender.
        with self._lock:
            self._watchers.pop(channel, None)

    def _wake(self, channel: str, running: Any) -> None:
        """A message was queued for a watched ``channel`` (the caller holds the lock): call its watcher, on its own
        loop. ``running`` is the running loop when the caller has looked it up, else ``_UNKNOWN``."""
        loop, callback = self._watchers.pop(channel)
        if running is _UNKNOWN:
            running = running_loop()
        if loop is running:
            callback()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: its consumer is gone
                loop.call_soon_threadsafe(callback)

    # Taking messages out ------------------------------------------------------------------------------------------

    def _pop_entry(self, channel: str, slot: _Slot) -> tuple[float, Message] | None:
        """Take the oldest unexpired (expiry, message) from ``slot`` (the caller holds the lock)."""
        queue = slot.queue
        on_full = self._on_full
        was_full = on_full is not None and len(queue) >= self._capacity_of(channel)
        now = self._clock()
        entry = None
        while queue:
            candidate = queue.popleft()
            if candidate[0] < now:
                self._on_expired(channel)
                continue
            entry = candidate
            break
        if was_full and on_full is not None and len(queue) < self._capacity_of(channel):
            on_full(channel, False)
        return entry

    def take_all(self, channel: str) -> list[tuple[float, Message]]:
        """Remove and return every unexpired queued message for ``channel`` with its expiry (on the buffers'
        clock), oldest first; expired ones are dropped and reported."""
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None or not slot.queue:
                return []
            was_full = len(slot.queue) >= self._capacity_of(channel)
            now = self._clock()
            kept = []
            for expires_at, message in slot.queue:
                if expires_at < now:
                    self._on_expired(channel)
                else:
                    kept.append((expires_at, message))
            slot.queue.clear()
            self._drop_if_idle(channel, slot)
            if was_full and self._on_full is not None:
                self._on_full(channel, False)
            return kept

    def in_creation_order(self, channels: list[str]) -> list[str]:
        """``channels`` in the order their buffers were made here (those without one last).

        A consumer's buffer, task and futures were allocated about together, so delivering to many channels in this
        order walks memory in order: at 10,000 members it halves the time a group message takes to reach them all,
        against an order that Redis or a hash chose.
        """
        slots = self._slots
        unknown = 1 << 62

        def created(channel: str) -> int:
            slot = slots.get(channel)
            return unknown if slot is None else slot.created

        return sorted(channels, key=created)

    def knows(self, channel: str) -> bool:
        """Whether ``channel`` has a buffer or a watcher here (so its name was checked on its way in)."""
        return channel in self._slots or channel in self._watchers

    @overload
    def next_or_waiter(
        self, channel: str, loop: asyncio.AbstractEventLoop | None = None, only_known: Literal[False] = False
    ) -> Message | asyncio.Future[Message]: ...

    @overload
    def next_or_waiter(
        self, channel: str, loop: asyncio.AbstractEventLoop | None, only_known: Literal[True]
    ) -> Message | asyncio.Future[Message] | None: ...

    def next_or_waiter(
        self, channel: str, loop: asyncio.AbstractEventLoop | None = None, only_known: bool = False
    ) -> Message | asyncio.Future[Message] | None:
        """The next message for ``channel`` if one is queued, else a future that the next delivery completes.

        A known channel with nothing queued (a consumer waiting for its next event) gets its future without the
        lock, by the protocol in the module's docs; otherwise looking at the queue and starting to wait happen under
        the lock. Either way a message delivered from another thread meanwhile is never left in the queue while its
        receiver waits. A caller cancelled while awaiting the future must call ``abandon(channel, future)``. (Not a
        coroutine: a consumer's every receive goes through here, and awaiting the future directly saves a coroutine
        frame per message.) ``loop`` is the running loop, when the caller has it at hand.

        With ``only_known``, a channel without a buffer here gets None and nothing changes: a layer's receive asks
        so on its hot path, and checks the name before asking again, instead of asking ``knows()`` first on every
        receive (600 instructions of the 16,000 that a message takes to reach a group member on Redis, callgrind).
        """
        slot = self._slots.get(channel)
        if slot is not None and not slot.queue:
            if loop is None:
                loop = get_running_loop()
            waiter: asyncio.Future[Message] = loop.create_future()
            slot.waiters.append(waiter)
            if slot.queue or slot.dropped:
                self._settle(channel, slot)  # another thread queued a message or dropped the slot as we appended
            return waiter
        if slot is None and only_known:
            return None
        lock = self._lock
        lock.acquire()  # as in deliver_many
        try:
            slot = self._slots.get(channel)
            if slot is None:
                slot = self._slots[channel] = _Slot()
            elif slot.queue:
                entry = self._pop_entry(channel, slot)
                if entry is not None:
                    return entry[1]
            waiter = (loop or get_running_loop()).create_future()
            slot.waiters.append(waiter)
            return waiter
        finally:
            lock.release()

    def _settle(self, channel: str, slot: _Slot) -> None:
        """After a lock-free append to ``slot``: make sure its waiters are in the channel's current slot, and
        paired with any message queued there."""
        with self._lock:
            current = self._slots.get(channel)
            if current is None:
                current = self._slots[channel] = slot
                slot.dropped = False
            elif current is not slot:
                # One at a time: a waiter another thread appends meanwhile stays for that thread's own _settle.
                while slot.waiters:
                    waiter = slot.waiters.popleft()
                    if not waiter.done():
                        current.waiters.append(waiter)
            self._pair_up(channel, current)

    def abandon(self, channel: str, waiter: asyncio.Future[Message]) -> None:
        """A receiver stopped waiting on ``waiter``: a message already handed to it goes back first in line."""
        if waiter.done() and not waiter.cancelled():
            self._put_back(channel, waiter.result(), self._clock() + self._hold)
        else:
            self._forget(channel, waiter)

    async def receive(self, channel: str) -> Message:
        """The next message for ``channel``: a queued one, else the next delivered."""
        waiter = self.next_or_waiter(channel)
        if not isinstance(waiter, asyncio.Future):
            return waiter
        try:
            return await waiter
        except BaseException:
            self.abandon(channel, waiter)  # a message handed over as the receiver gave up goes back first
            raise

    def _forget(self, channel: str, waiter: asyncio.Future[Any]) -> None:
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None:
                return
            try:
                slot.waiters.remove(waiter)
            except ValueError:
                pass
            self._drop_if_idle(channel, slot)

    # Inspection and housekeeping ----------------------------------------------------------------------------------

    def waiting(self, channel: str) -> bool:
        """Whether a receiver is waiting on ``channel`` right now."""
        slot = self._slots.get(channel)
        # A snapshot first: another thread may append to the deque while this looks (see the module's docs).
        return slot is not None and any(not waiter.done() for waiter in tuple(slot.waiters))

    def names(self) -> Iterator[str]:
        """The channels that hold messages or have a receiver waiting (a snapshot)."""
        with self._lock:
            return iter([name for name, slot in self._slots.items() if not slot.idle()])

    def take(self, channel: str) -> tuple[float, Message] | None:
        """Take the next unexpired message of ``channel`` with its expiry, as a receive would; None when none waits."""
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None:
                return None
            entry = self._pop_entry(channel, slot)
            self._drop_if_idle(channel, slot)
            return entry

    def queued(self, channel: str) -> int:
        slot = self._slots.get(channel)
        return len(slot.queue) if slot is not None else 0

    def maybe_sweep(self) -> None:
        """``sweep()`` when the last one is ``sweep_every`` seconds ago."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every
            self.sweep()

    def sweep(self) -> list[str]:
        """Drop expired messages that nobody took (their receiver is gone) and forget idle channels; returns the
        channels forgotten."""
        forgotten = []
        with self._lock:
            for name, slot in list(self._slots.items()):
                self._drop_expired(name, slot.queue)
                if slot.idle():
                    self._drop_if_idle(name, slot)
                    if self._slots.get(name) is not slot:  # not put back by a receiver that arrived meanwhile
                        forgotten.append(name)
        return forgotten

    def _drop_expired(self, channel: str, queue: deque[tuple[float, Message]]) -> None:
        """Drop the expired messages at the head of ``queue``, and report a full queue that is full no longer (the
        caller holds the lock)."""
        now = self._clock()
        if not queue or queue[0][0] >= now:
            return
        on_full = self._on_full
        was_full = on_full is not None and len(queue) >= self._capacity_of(channel)
        while queue and queue[0][0] < now:
            queue.popleft()
            self._on_expired(channel)
        if was_full and on_full is not None and len(queue) < self._capacity_of(channel):
            on_full(channel, False)

    def clear(self) -> None:
        """Drop every queued message; receivers that are waiting keep waiting."""
        with self._lock:
            for name, slot in list(self._slots.items()):
                if self._on_full is not None and slot.queue and len(slot.queue) >= self._capacity_of(name):
                    self._on_full(name, False)
                slot.queue.clear()
                self._drop_if_idle(name, slot)

    def sizes(self) -> dict[str, Any]:
        """``local_channels``: channels with queued messages or waiting receivers; ``local_queued``: messages."""
        with self._lock:
            return {
                "local_channels": sum(not slot.idle() for slot in self._slots.values()),
                "local_queued": sum(len(slot.queue) for slot in self._slots.values()),
            }
