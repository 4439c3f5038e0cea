"""The command link: one connection per host and event loop, with every command of a loop tick in one write.

Every command issued while a batch is out is written in the next batch and the replies are read back in order (a
pipeline that nobody has to ask for), so concurrent senders share round trips and a lone sender pays one round trip
per command, written and read in its own task. It never needs more than one connection, so thousands of concurrent
sends cannot exhaust a pool. See ``failures.py`` for what a command does when Redis is away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from tether.exceptions import LayerUnavailable
from tether.layers.redis.failures import (
    CONNECTION_ERRORS,
    FATAL_CONNECT_ERRORS,
    Backoff,
    abort_connection,
    disconnect_quietly,
    unavailable,
)
from tether.layers.redis.resp import pack_commands, read_reply

__all__ = ["Link"]

logger = logging.getLogger("tether.layers.redis")

#: A connection idle this long is checked with a PING before a batch goes out on it: after a Redis restart the old
#: socket is dead, and finding out by PING costs nothing that might have run.
_IDLE_CHECK_AFTER = 1.0


class _Call:
    __slots__ = ("args", "deadline", "future")

    def __init__(self, args: tuple[Any, ...], future: asyncio.Future[Any], deadline: float) -> None:
        self.args = args
        self.future = future
        self.deadline = deadline


class Link:
    """Commands over one connection, coalesced: everything issued while a batch is out goes in the next write.

    ``await call(*args)`` returns the reply; an error reply raises the redis-py exception for that call only.
    """

    def __init__(
        self, make_connection: Callable[[], AbstractConnection], where: str, wait: float, timeout: float
    ) -> None:
        self._make_connection = make_connection
        self._where = where
        self._wait = wait  # how long a command waits for Redis to be reachable
        self._timeout = timeout  # how long Redis may take to answer once it has a command
        self._connection: AbstractConnection | None = None
        self._pending: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self._leading = False  # a caller is running its own command on the link (see call)
        self._idle_since = 0.0
        self._closing: set[asyncio.Future[None]] = set()  # stalled connections being closed
        self._loop = asyncio.get_running_loop()

    async def call(self, *args: Any) -> Any:
        loop = self._loop
        call = _Call(args, loop.create_future(), loop.time() + self._wait)
        if self._flusher is not None or self._leading:
            # The link is busy: join the next batch, which goes out as soon as the current one is answered.
            self._pending.append(call)
            return await call.future
        await self._lead([call])
        return call.future.result()

    async def call_sequence(self, *commands: tuple[Any, ...]) -> Any:
        """Send ``commands`` back to back, nothing of other callers between them (a Redis Cluster's ``ASKING`` and
        the command it allows), and return the last one's reply; an error reply of any of them raises."""
        loop = self._loop
        deadline = loop.time() + self._wait
        calls = [_Call(args, loop.create_future(), deadline) for args in commands]
        if self._flusher is not None or self._leading:
            self._pending.extend(calls)
        else:
            await self._lead(calls)
        replies = await asyncio.gather(*(call.future for call in calls), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies[-1]

    async def _lead(self, calls: list[_Call]) -> None:
        """The link is idle: this caller writes its commands and reads the replies itself, which saves a task and
        two trips through the event loop on every command of a lone sender. Calls made meanwhile wait for the next
        batch, sent by a flusher task once these replies are in."""
        self._leading = True
        try:
            await self._run(calls)
        except BaseException:
            for call in calls:
                if not call.future.done():  # cancelled before the command went out (connecting, or checking)
                    call.future.cancel()
            raise
        finally:
            self._leading = False
            if self._pending and self._flusher is None:
                self._flusher = self._loop.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._run(batch)
        except asyncio.CancelledError:
            self._fail(self._pending, LayerUnavailable(f"The Redis layer's link to {self._where} was closed."))
            self._pending = []
            raise
        except Exception as exc:  # a bug, not an outage: fail what waits, say so, and let the next call start over
            logger.exception("The Redis link to %s failed", self._where)
            self._fail(self._pending, LayerUnavailable(f"The Redis layer's link to {self._where} failed: {exc!r}"))
            self._pending = []
        finally:
            self._flusher = None

    async def _run(self, batch: list[_Call]) -> None:
        connection = await self._ready(batch)
        if connection is None:
            return
        index = 0
        # One watchdog per batch bounds the whole exchange (a timeout per reply would cost more than the reply):
        # when Redis has not answered everything in time, the connection is closed and the reads fail.
        stalled: list[bool] = []
        watchdog = self._loop.call_later(self._timeout, self._stall, connection, stalled)
        try:
            packed = pack_commands([call.args for call in batch])
            await connection.send_packed_command(packed, False)
            for index, call in enumerate(batch):  # noqa: B007 - index tells the except clause how far we got
                try:
                    reply = await connection.read_response()
                except redis_errors.ResponseError as exc:
                    if not call.future.done():
                        call.future.set_exception(exc)
                    continue
                if not call.future.done():
                    call.future.set_result(reply)
            index = len(batch)
        except CONNECTION_ERRORS as exc:
            await self._drop(connection)
            error = redis_errors.TimeoutError(f"no reply within {self._timeout:g}s") if stalled else exc
            self._fail(batch[index:], unavailable(self._where, error))
        except BaseException:
            await self._drop(connection)
            self._fail(batch[index:], LayerUnavailable(f"The Redis layer's link to {self._where} was closed."))
            raise
        finally:
            watchdog.cancel()
        self._idle_since = self._loop.time()

    def _stall(self, connection: AbstractConnection, stalled: list[bool]) -> None:
        closing = abort_connection(connection, stalled)
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _ready(self, batch: list[_Call]) -> AbstractConnection | None:
        """A connected, checked connection; None (and the batch failed) when Redis stays away past the deadline."""
        backoff = Backoff()
        started = self._loop.time()
        while True:
            connection = self._connection
            if connection is None:
                connection = self._connection = self._make_connection()
            try:
                if not connection.is_connected:
                    await connection.connect()
                elif self._loop.time() - self._idle_since > _IDLE_CHECK_AFTER:
                    await connection.send_command("PING", check_health=False)
                    await read_reply(connection, self._timeout)
                return connection
            except FATAL_CONNECT_ERRORS as exc:
                await self._drop(connection)
                self._fail(batch, LayerUnavailable(f"Redis at {self._where} refused the credentials: {exc}"))
                return None
            except CONNECTION_ERRORS as exc:
                await self._drop(connection)
                now = self._loop.time()
                deadline = batch[0].deadline
                if now >= deadline:
                    self._fail(batch, unavailable(self._where, exc, now - started))
                    return None
                await asyncio.sleep(min(backoff.next_delay(), deadline - now))
            except BaseException:  # cancelled while connecting or checking: what the socket holds is unknown
                await self._drop(connection)
                raise

    async def _drop(self, connection: AbstractConnection) -> None:
        await disconnect_quietly(connection)

    @staticmethod
    def _fail(calls: list[_Call], exc: BaseException) -> None:
        for call in calls:
            if not call.future.done():
                call.future.set_exception(exc)
                # Callers that gave up on the future must not turn this into "exception was never retrieved".
                call.future.exception()

    async def aclose(self) -> None:
        flusher = self._flusher
        if flusher is not None:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        if self._connection is not None:
            await self._drop(self._connection)
            self._connection = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)  # stalled connections' closes, started earlier
