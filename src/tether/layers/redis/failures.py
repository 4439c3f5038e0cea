"""What the Redis layers do when Redis fails: which errors mean a connection is gone, how long to wait before trying
again, the error users get, and how a receive loop waits out an outage.

Commands wait for an unreachable Redis at most ``unavailable_timeout`` seconds, then fail with ``LayerUnavailable``; a
command whose connection broke after it was written also fails with ``LayerUnavailable`` (it may or may not have
run), and is never retried, so nothing is delivered twice. Receive loops never give up: they back off and log one
line when an outage starts and one when it ends. So do periodic tasks (``repeat``: presence's heartbeat, the streams
watch).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from tether.exceptions import LayerUnavailable
from tether.layers.stats import LayerStats

__all__ = [
    "CONNECTION_ERRORS",
    "FATAL_CONNECT_ERRORS",
    "Backoff",
    "Outage",
    "Unreached",
    "abort_connection",
    "disconnect_quietly",
    "repeat",
    "unavailable",
]

logger = logging.getLogger("tether.layers.redis")

#: Errors that mean "the connection is unusable", as opposed to an error reply from Redis.
CONNECTION_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
    asyncio.TimeoutError,
)
#: Errors that retrying cannot fix: the credentials are wrong.
FATAL_CONNECT_ERRORS = (redis_errors.AuthenticationError, redis_errors.AuthorizationError)


class Backoff:
    """Reconnection delays: from ``first`` doubling to ``cap`` seconds, with jitter so processes spread out."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * (2.0**self.attempts))
        self.attempts += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempts = 0


class Unreached(LayerUnavailable):
    """A command that never left: Redis could not be reached. Unlike a connection that broke while a command was
    out, nothing ran, so a Redis Cluster client may send the command again to the node a fresh slot map names."""


def unavailable(where: str, exc: BaseException, waited: float | None = None) -> LayerUnavailable:
    """The error for a command that Redis did not answer: unreachable for ``waited`` seconds (``Unreached``), or
    (``waited`` None) a connection that broke while the command was out."""
    if waited is None:
        return LayerUnavailable(
            f"The connection to Redis at {where} broke during the command ({exc}); it may or may not have run."
        )
    return Unreached(
        f"Redis at {where} could not be reached for {waited:g}s ({exc}). Check that it is running; the wait is "
        "the layer's unavailable_timeout option."
    )


def abort_connection(connection: AbstractConnection, stalled: list[bool]) -> asyncio.Future[None]:
    """A watchdog fired: note it and close ``connection``, so the read waiting on it fails."""
    stalled.append(True)
    return asyncio.ensure_future(disconnect_quietly(connection))


async def disconnect_quietly(connection: AbstractConnection) -> None:
    """Close ``connection``, ignoring the errors of one that is already broken."""
    try:
        await connection.disconnect(nowait=True)
    except Exception:  # already broken: nothing more to release
        pass


class Outage:
    """Backoff and logging for a receive loop that lost Redis: one warning when it starts, one line when it ends."""

    def __init__(self, stats: LayerStats, what: str) -> None:
        self._stats = stats
        self._what = what
        self._backoff = Backoff()
        self._started: float | None = None

    async def wait(self, where: str, exc: BaseException, consequence: str = "") -> None:
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
            self._stats.incr("reconnects")
            logger.warning(
                "Lost Redis at %s while reading %s (%s); reconnecting with backoff%s",
                where,
                self._what,
                exc,
                consequence,
                exc_info=None if isinstance(exc, CONNECTION_ERRORS) else exc,
            )
        await asyncio.sleep(self._backoff.next_delay())

    def over(self) -> None:
        if self._started is not None:
            logger.warning(
                "Reading %s again after %.1fs without Redis",
                self._what,
                asyncio.get_running_loop().time() - self._started,
            )
            self._started = None
            self._backoff.reset()


async def repeat(
    interval: float,
    step: Callable[[], Awaitable[object]],
    failed: Callable[[Exception], None],
    recovered: Callable[[], None],
    go_on: Callable[[], bool] = lambda: True,
) -> None:
    """Run ``step`` every ``interval`` seconds (first after one interval) while ``go_on()``. A failing step does not
    stop it, and is reported once per episode: ``failed(exc)`` at its first failure, ``recovered()`` at the first
    success after."""
    failing = False
    while go_on():
        await asyncio.sleep(interval)
        try:
            await step()
        except Exception as exc:
            if not failing:
                failing = True
                failed(exc)
        else:
            if failing:
                failing = False
                recovered()
