"""A receive loop that reads for a named channel while this process's receivers wait, and how much it takes ahead.

Both a named list's reader (``RedisChannelLayer``) and a durable channel's stream reader (either Redis layer) run as
one of these per channel and event loop: ``receive`` starts the task, or wakes it while it idles; the task stops by
itself after ``block_timeout`` seconds without a receiver.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["PREFETCH_WINDOW", "Prefetch", "ReaderTask"]

#: Seconds of work a named channel's reader may take ahead for this process's receivers (see ``Prefetch``).
PREFETCH_WINDOW = 0.01


class ReaderTask:
    """A named channel's reader task, and the future that wakes it when a receiver comes back."""

    __slots__ = ("idle", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None]
        self.idle: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """A receiver is waiting again: end the reader's idle wait."""
        if self.idle is not None and not self.idle.done():
            self.idle.set_result(None)

    async def wait_for_receiver(self, timeout: float) -> bool:
        """Wait until ``wake()`` (True) or until ``timeout`` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        idle = self.idle = loop.create_future()
        timer = loop.call_later(timeout, _resolve, idle, False)
        try:
            return await idle is not False
        finally:
            timer.cancel()
            self.idle = None


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class Prefetch:
    """How many messages a named channel's next pop takes: doubled while the receivers take a whole batch within
    ``PREFETCH_WINDOW`` seconds, halved when they take longer, so a slow consumer pops one at a time and leaves the
    rest to other workers."""

    __slots__ = ("last", "limit", "popped_at", "size")

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.size = 1
        self.last = 0  # how many the last pop returned
        self.popped_at = 0.0

    def asked(self, now: float) -> None:
        """Receivers want more: the last batch is used up. Grow or shrink by how long that took."""
        if not self.last:
            return
        if now - self.popped_at <= PREFETCH_WINDOW:
            if self.last >= self.size:
                self.size = min(self.size * 2, self.limit)
        else:
            self.size = max(1, self.size // 2)

    def popped(self, count: int, now: float) -> None:
        self.last = count
        self.popped_at = now
