"""Where buckets live: ``MemoryStore`` (this process) and ``RedisStore`` (every process that shares the Redis).

Both answer ``await store.take(key, rate)`` with ``(wait, first_refusal)``: ``wait`` is ``0.0`` when a token was
taken, else the seconds until one will be there; ``first_refusal`` is true for the first refusal after an allowed
take, so a limit hit is logged once per episode and not once per refused attempt.

The Redis store keeps one hash per key (``<prefix>:<namespace>:<limit>:<subject>`` with ``tokens``, ``updated`` and
``limited``) and updates it in one Lua script, so concurrent processes never grant the same token twice. Each key
expires when its bucket would be full again, so idle clients leave nothing behind; nothing outside the prefix is
ever written or deleted. Time comes from Redis (``TIME``), so processes on hosts whose clocks disagree share one
clock; tests may inject their own.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from tether.ratelimit.rates import Rate, TokenBucket

if TYPE_CHECKING:
    from tether.layers.redis.config import HostSpec
    from tether.layers.redis.endpoints import Endpoint

__all__ = ["DEFAULT_MAX_KEYS", "REDIS_WAIT", "TAKE_SCRIPT_SOURCE", "MemoryStore", "RedisStore", "Store"]

#: Buckets the in-memory store keeps before it forgets the least recently used one (which then starts full again):
#: about 200 bytes each, so 20 MB at most, however many addresses knock.
DEFAULT_MAX_KEYS = 100_000
#: Seconds a take retries a Redis that refuses connections before the limiter lets the action through (and counts
#: the error): a rate limit must not turn a Redis outage into an outage of every WebSocket. (A Redis that accepts and
#: then stops answering gets the Redis layer's command timeout, five seconds.)
REDIS_WAIT = 0.5

#: The Redis side of ``TokenBucket.take``: KEYS[1] the bucket; ARGV capacity, tokens per second, and the time in
#: seconds (empty: Redis's own clock). Returns {wait as a string (Lua numbers become integers in replies), 1 for the
#: first refusal after an allowed take, else 0}.
TAKE_SCRIPT_SOURCE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated', 'limited')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
if now > updated then
  tokens = math.min(capacity, tokens + (now - updated) * rate)
  updated = now
end
local wait = 0
local first = 0
local limited = '0'
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
  limited = '1'
  if state[3] ~= '1' then first = 1 end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'updated', string.format('%.17g', updated),
  'limited', limited)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {string.format('%.17g', wait), first}
"""


class Store(Protocol):
    """What the limiter needs from a store."""

    async def take(self, key: str, rate: Rate) -> tuple[float, bool]: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """Buckets in this process, at most ``max_keys`` of them (least recently used forgotten first).

    Thread-safe: sync consumers take from their handler threads. ``clock`` (monotonic seconds) is injectable.
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take_now(self, key: str, rate: Rate) -> tuple[float, bool]:
        """``take`` without the coroutine, for sync callers."""
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(rate, now)
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            was_limited = bucket.limited
            wait = bucket.take(rate, now)
        return wait, bool(wait) and not was_limited

    async def take(self, key: str, rate: Rate) -> tuple[float, bool]:
        return self.take_now(key, rate)

    async def aclose(self) -> None:
        self._buckets.clear()


class RedisStore:
    """Buckets in Redis under ``prefix``, through the Redis layer's connection machinery (one pipelined link per
    event loop, redis-py's URLs, TLS, Sentinel and Cluster).

    ``clock`` (seconds) replaces Redis's ``TIME`` when given: for tests only, since every process must share it.
    ``wait`` bounds how long a take waits for an unreachable Redis before ``LayerUnavailable`` is raised.
    """

    def __init__(
        self, host: HostSpec, prefix: str, *, clock: Callable[[], float] | None = None, wait: float = REDIS_WAIT
    ) -> None:
        from tether.layers.redis.endpoints import TransportSettings, open_endpoint
        from tether.layers.redis.per_loop import PerLoop
        from tether.layers.redis.storage import Script

        self.prefix = prefix
        self.clock = clock
        self.where = host.describe()
        self._script = Script("rate_limit_take", TAKE_SCRIPT_SOURCE)
        transport = TransportSettings(unavailable_timeout=wait)
        self._endpoints: PerLoop[Endpoint] = PerLoop(lambda: open_endpoint(host, transport), _close_endpoint)

    async def take(self, key: str, rate: Rate) -> tuple[float, bool]:
        now = "" if self.clock is None else repr(self.clock())
        reply: Any = await self._endpoints.get().script(
            self._script, [f"{self.prefix}:{key}"], [rate.capacity, repr(rate.per_second), now]
        )
        return float(reply[0]), bool(int(reply[1]))

    async def delete_all(self) -> int:
        """Delete every bucket under the prefix (and nothing else); returns how many. For tests and resets."""
        return await self._endpoints.get().delete_matching(f"{self.prefix}:*")

    async def aclose(self) -> None:
        """Close the running loop's connection (other loops' close with their loops)."""
        await self._endpoints.close_current()


async def _close_endpoint(endpoint: Endpoint) -> None:
    await endpoint.aclose()
