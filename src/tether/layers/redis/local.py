"""Per-channel buffers in this process, where the Redis layers put what their receive loops read.

A receive loop reads one Redis key for the whole process and routes each message here; ``receive()`` then waits on a
local future, with no Redis round trip of its own. Each buffer is bounded by the channel's capacity and drops
messages past their expiry. Waiters may live on other event loops (``async_to_sync`` from a thread): they are woken
on their own loop, and a message handed to a waiter that was cancelled meanwhile goes back to the front.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tether.types import Message

__all__ = ["LocalChannels", "now_ms"]


def now_ms() -> int:
    """Wall-clock milliseconds, the clock frame expiry times use (processes on several machines share it)."""
    return int(time.time() * 1000)


class _Slot:
    __slots__ = ("queue", "waiters")

    def __init__(self) -> None:
        self.queue: deque[tuple[int, Message]] = deque()
        self.waiters: deque[asyncio.Future[tuple[int, Message]]] = deque()

    def idle(self) -> bool:
        return not self.queue and not self.waiters


class LocalChannels:
    """Bounded per-channel queues with waiting receivers.

    ``capacity_of(channel)`` bounds each queue; ``on_expired(channel)`` is called for every message dropped because
    its expiry passed; ``on_full(channel, full)`` is called when a queue reaches its capacity (``True``) and when it
    drops below it again (``False``).
    """

    def __init__(
        self,
        capacity_of: Callable[[str], int],
        on_expired: Callable[[str], None],
        on_full: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._capacity_of = capacity_of
        self._on_expired = on_expired
        self._on_full = on_full
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.RLock()

    # Putting messages in ------------------------------------------------------------------------------------------

    def deliver(self, channel: str, message: Message, expires_at: int) -> bool:
        """Hand ``message`` to a waiting receiver or queue it; False (and nothing kept) when the queue is full."""
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None:
                slot = self._slots[channel] = _Slot()
            waiters = slot.waiters
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    self._hand_over(channel, waiter, message, expires_at)
                    if slot.idle():
                        del self._slots[channel]
                    return True
            queue = slot.queue
            capacity = self._capacity_of(channel)
            if len(queue) >= capacity:
                if self._on_full is not None:
                    self._on_full(channel, True)
                return False
            queue.append((expires_at, message))
            if len(queue) == capacity and self._on_full is not None:
                self._on_full(channel, True)
            return True

    def _hand_over(self, channel: str, waiter: asyncio.Future[Any], message: Message, expires_at: int) -> None:
        loop = waiter.get_loop()
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            waiter.set_result((expires_at, message))
            return
        try:
            loop.call_soon_threadsafe(self._complete_elsewhere, channel, waiter, message, expires_at)
        except RuntimeError:  # the waiter's loop is closed: nobody will receive through it
            self._put_back(channel, message, expires_at)

    def _complete_elsewhere(self, channel: str, waiter: asyncio.Future[Any], message: Message, exp: int) -> None:
        if waiter.done():
            self.deliver(channel, message, exp)
        else:
            waiter.set_result((exp, message))

    def _put_back(self, channel: str, message: Message, expires_at: int) -> None:
        """Return a message that a cancelled receiver did not take to the front of its queue (capacity aside)."""
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None:
                slot = self._slots[channel] = _Slot()
            while slot.waiters:
                waiter = slot.waiters.popleft()
                if not waiter.done():
                    self._hand_over(channel, waiter, message, expires_at)
                    return
            slot.queue.appendleft((expires_at, message))

    # Taking messages out ------------------------------------------------------------------------------------------

    def take(self, channel: str) -> Message | None:
        """The oldest unexpired queued message for ``channel``, or None."""
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None or not slot.queue:
                return None
            queue = slot.queue
            capacity = self._capacity_of(channel)
            was_full = len(queue) >= capacity
            now = now_ms()
            message = None
            while queue:
                expires_at, candidate = queue.popleft()
                if expires_at < now:
                    self._on_expired(channel)
                    continue
                message = candidate
                break
            if was_full and len(queue) < capacity and self._on_full is not None:
                self._on_full(channel, False)
            if slot.idle():
                del self._slots[channel]
            return message

    async def wait(self, channel: str) -> Message:
        """Wait for the next message delivered to ``channel`` (call ``take`` first: this does not look at the queue)."""
        waiter: asyncio.Future[tuple[int, Message]] = asyncio.get_running_loop().create_future()
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None:
                slot = self._slots[channel] = _Slot()
            slot.waiters.append(waiter)
        try:
            return (await waiter)[1]
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                expires_at, message = waiter.result()
                self._put_back(channel, message, expires_at)
            else:
                self._forget(channel, waiter)
            raise

    async def receive(self, channel: str) -> Message:
        message = self.take(channel)
        if message is not None:
            return message
        return await self.wait(channel)

    def _forget(self, channel: str, waiter: asyncio.Future[Any]) -> None:
        with self._lock:
            slot = self._slots.get(channel)
            if slot is None:
                return
            try:
                slot.waiters.remove(waiter)
            except ValueError:
                pass
            if slot.idle():
                del self._slots[channel]

    # Inspection and housekeeping ----------------------------------------------------------------------------------

    def waiting(self, channel: str) -> bool:
        """Whether a receiver is waiting on ``channel`` right now."""
        slot = self._slots.get(channel)
        return slot is not None and any(not waiter.done() for waiter in slot.waiters)

    def queued(self, channel: str) -> int:
        slot = self._slots.get(channel)
        return len(slot.queue) if slot is not None else 0

    def sweep(self) -> None:
        """Drop expired messages that nobody took (their receiver is gone) and forget idle channels."""
        now = now_ms()
        with self._lock:
            for name, slot in list(self._slots.items()):
                queue = slot.queue
                while queue and queue[0][0] < now:
                    queue.popleft()
                    self._on_expired(name)
                if slot.idle():
                    del self._slots[name]

    def clear(self) -> None:
        """Drop every queued message; receivers that are waiting keep waiting."""
        with self._lock:
            for name, slot in list(self._slots.items()):
                slot.queue.clear()
                if slot.idle():
                    del self._slots[name]

    def sizes(self) -> dict[str, Any]:
        with self._lock:
            return {
                "local_channels": len(self._slots),
                "local_queued": sum(len(slot.queue) for slot in self._slots.values()),
            }
