"""Blocking connections for the receive loops (``BLPOP``/``BLMPOP``): one per reader.

Each has no socket timeout but a read bound longer than the server-side block, so an idle wait neither times out
nor hangs on a dead peer; ``close()`` unblocks a waiting pop with ``CLIENT UNBLOCK`` from the command link rather
than cutting a connection that Redis may be handing a message to. On Redis Cluster, ``cluster.py`` points each one
at the master of its key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from tether.layers.redis.failures import CONNECTION_ERRORS, Outage, abort_connection, disconnect_quietly
from tether.layers.redis.resp import pack_commands, read_reply

__all__ = ["BlockingConnection", "ListPop"]


class BlockingConnection:
    """One connection for one reader's blocking commands. ``call`` raises the ``CONNECTION_ERRORS`` it meets (the
    reader decides how to back off); the connection reconnects on the next call.

    The connection has no socket timeout: redis-py would then write through ``asyncio.wait_for``, which on Python
    3.11 can swallow a cancellation and leave a reader running after ``close()``. Each read is bounded instead by
    ``read_timeout`` (longer than any server-side block), so a dead peer is still noticed.
    """

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        where: str,
        read_timeout: float,
        command: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self._make_connection = make_connection
        self.where = where
        self.read_timeout = read_timeout
        self._command = command  # another connection to the same server, for CLIENT UNBLOCK
        self._connection: AbstractConnection | None = None
        self._client_id: int | None = None
        self._closing: asyncio.Future[None] | None = None  # the close of a connection whose watchdog fired
        self.waiting = False  # a blocking command is out, its reply not read yet
        # A reader repeats the same few commands (its pop, with a handful of counts): each is encoded once.
        self._packed: dict[tuple[Any, ...], list[bytes]] = {}

    async def call(self, *args: Any) -> Any:
        connection = self._connection
        if connection is None:
            connection = self._connection = self._make_connection()
        try:
            if not connection.is_connected:
                self._client_id = None
                await connection.connect()
                if self._command is not None:
                    await connection.send_command("CLIENT", "ID", check_health=False)
                    try:
                        self._client_id = await read_reply(connection, self.read_timeout)
                    except redis_errors.ResponseError:
                        self._command = None  # CLIENT is not allowed here (some managed Redis): close() cancels
            packed = self._packed.get(args)
            if packed is None:
                packed = pack_commands([args])
                if len(self._packed) < 32:
                    self._packed[args] = packed
            await connection.send_packed_command(packed, check_health=False)
            self.waiting = True
            # A watchdog rather than a timeout per read (which costs a context and a timer reschedule per message):
            # a reply that takes longer than any server-side block means a dead peer; the connection is closed
            # under the read, which then fails.
            stalled: list[bool] = []
            watchdog = asyncio.get_running_loop().call_later(self.read_timeout, self._stall, connection, stalled)
            try:
                return await connection.read_response()
            except CONNECTION_ERRORS:
                if stalled:
                    raise redis_errors.TimeoutError(f"No reply within {self.read_timeout:g}s") from None
                raise
            finally:
                watchdog.cancel()
                self.waiting = False
        except BaseException:
            await self.aclose()
            raise

    async def unblock(self) -> bool:
        """Make the blocking command that is out return now (``CLIENT UNBLOCK``: as if it had timed out, unless
        Redis has just served it), so its reader reads that reply and stops, rather than dropping a connection that
        Redis may be handing a message to. True when the reply is on its way; False when nothing is out or this
        cannot be done here (cancel the reader instead)."""
        if not self.waiting or self._client_id is None or self._command is None:
            return False
        try:
            await self._command("CLIENT", "UNBLOCK", self._client_id)
        except Exception:
            return False
        return True

    def _stall(self, connection: AbstractConnection, stalled: list[bool]) -> None:
        """The watchdog fired: close the connection under the read (kept, so ``aclose`` waits for it)."""
        self._closing = abort_connection(connection, stalled)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        self._client_id = None
        if connection is not None:
            await disconnect_quietly(connection)
        closing, self._closing = self._closing, None
        if closing is not None:
            await asyncio.gather(closing, return_exceptions=True)


class ListPop:
    """A receive loop's pops from one Redis list: a batch at a time with ``BLMPOP``, one at a time with ``BLPOP`` on
    Redis before 7.0, and an outage waited out with backoff and one log line at each end.

    Both of ``RedisChannelLayer``'s receive loops (a process's inbox, a named channel) pop through one of these, so
    the fallback and the outage handling are written once.
    """

    def __init__(self, connection: BlockingConnection, key: str, block: float, outage: Outage) -> None:
        self.connection = connection
        self.key = key
        self.block = block
        self.outage = outage
        self.multi_pop = True  # False once Redis said it has no BLMPOP

    async def __call__(self, count: int) -> Sequence[bytes] | None:
        """Up to ``count`` entries from the head of the list, waiting up to ``block`` seconds for the first: empty
        when none came; None when this round failed (Redis was away and the backoff has been waited out, or it has
        no ``BLMPOP``), and the caller simply pops again."""
        try:
            if self.multi_pop:
                reply = await self.connection.call("BLMPOP", self.block, 1, self.key, "LEFT", "COUNT", count)
                entries = reply[1] if reply else ()
            else:
                reply = await self.connection.call("BLPOP", self.key, self.block)
                entries = (reply[1],) if reply else ()
        except redis_errors.ResponseError as exc:
            if self.multi_pop and "unknown command" in str(exc).lower():
                self.multi_pop = False
                return None
            await self.outage.wait(self.connection.where, exc)
            return None
        except Exception as exc:  # the connection broke (or worse): back off, keep serving
            await self.outage.wait(self.connection.where, exc)
            return None
        self.outage.over()
        return entries
