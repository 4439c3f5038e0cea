"""A per-user limit on posting: a small token bucket for each user, kept in this process.

Each user may post ``burst`` messages at once, then one more every ``1 / per_second`` seconds: a person typing is
never slowed down, a script that floods a room is, whichever of the user's connections it uses. The buckets live in
the process, so with several server processes each one grants its own budget (the limit per user is then that many
times higher); a limit shared through Redis is a job for the runtime-control limiter that tether plans, not for this
example.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["PerUserLimit", "TokenBucket"]


class TokenBucket:
    """``capacity`` tokens, refilled at ``per_second``; each allowed action takes one."""

    __slots__ = ("capacity", "per_second", "tokens", "updated")

    def __init__(self, capacity: int, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = float(capacity)
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there will be one (nothing is taken)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class PerUserLimit:
    """One ``TokenBucket`` per key (a user's primary key), for at most ``max_users`` recently active users.

    Past ``max_users``, the least recently active user's bucket is dropped (they start again with a full bucket), so
    memory stays bounded however many accounts post. ``clock`` is injectable for tests. Safe to share between
    threads: every server thread's consumers may post at once.
    """

    def __init__(
        self,
        burst: int,
        per_second: float,
        *,
        max_users: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_second <= 0:
            raise ValueError(f"PerUserLimit needs burst >= 1 and per_second > 0, not {burst} and {per_second}.")
        self.burst = burst
        self.per_second = per_second
        self.max_users = max_users
        self.clock = clock
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> float:
        """Count one action of ``key``: 0.0 when allowed, else the seconds to wait before the next one is."""
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.burst, self.per_second, now)
                if len(self._buckets) > self.max_users:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            return bucket.take(now)
