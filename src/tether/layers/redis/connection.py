"""The Redis layers' transport: connections per event loop, a write coalescer, blocking readers, bounded waits.

Three kinds of connection, all built from redis-py's asyncio connection classes (so URLs, TLS, unix sockets, AUTH,
``db`` and Sentinel-managed masters work as in redis-py):

* One **command link** per host and event loop. Every command issued during one loop tick is written in one batch
  and their replies read back in order (a pipeline that nobody has to ask for), so concurrent senders share round
  trips and a single sender pays one round trip per command. It never needs more than one connection, so thousands
  of concurrent sends cannot exhaust a pool.
* **Blocking connections** for the receive loops (``BLPOP``/``BLMPOP``, ``SUBSCRIBE``): one per reader, with a socket
  timeout longer than the server-side block, so an idle wait neither times out nor hangs on a dead peer.
* For Redis Cluster, redis-py's ``RedisCluster`` routes each command by its key (scripts keep their keys in one
  hash slot).

When Redis cannot be reached, a command waits (reconnecting with backoff) at most ``unavailable_timeout`` seconds,
then fails with ``LayerUnavailable``; a command whose connection broke after it was written also fails with
``LayerUnavailable`` (it may or may not have run), and is never retried, so nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from tether.exceptions import LayerUnavailable
from tether.layers.redis.config import HostSpec
from tether.layers.redis.storage import Script

if TYPE_CHECKING:
    from redis.asyncio.sentinel import Sentinel

__all__ = [
    "CONNECTION_ERRORS",
    "Backoff",
    "BlockingConnection",
    "ClusterEndpoint",
    "Endpoint",
    "Link",
    "NodeEndpoint",
    "PerLoop",
    "TransportSettings",
    "disconnect_quietly",
    "open_endpoint",
    "pack_commands",
    "read_reply",
    "validate_host",
]

logger = logging.getLogger("tether.layers.redis")

#: Errors that mean "the connection is unusable", as opposed to an error reply from Redis.
CONNECTION_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
    asyncio.TimeoutError,
)
_FATAL_CONNECT_ERRORS = (redis_errors.AuthenticationError, redis_errors.AuthorizationError)

#: A connection idle this long is checked with a PING before a batch goes out on it: after a Redis restart the old
#: socket is dead, and finding out by PING costs nothing that might have run.
_IDLE_CHECK_AFTER = 1.0


@dataclass(frozen=True)
class TransportSettings:
    """How long to wait for Redis, and how long a blocking read blocks server-side before it loops."""

    unavailable_timeout: float
    block_timeout: float = 5.0


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


def _unavailable(where: str, exc: BaseException, waited: float | None = None) -> LayerUnavailable:
    if waited is None:
        text = f"The connection to Redis at {where} broke during the command ({exc}); it may or may not have run."
    else:
        text = (
            f"Redis at {where} could not be reached for {waited:g}s ({exc}). Check that it is running; the wait is "
            "the layer's unavailable_timeout option."
        )
    return LayerUnavailable(text)


# The command link --------------------------------------------------------------------------------------------------

#: Arguments longer than this are written as their own chunk rather than copied into the batch's buffer.
_LARGE_ARGUMENT = 16 * 1024


def pack_commands(commands: list[tuple[Any, ...]]) -> list[bytes]:
    """Encode ``commands`` in the Redis protocol (RESP) as a few chunks for one write.

    The layers send bytes, str, int and float arguments only, so this does less than redis-py's general encoder:
    it is on the path of every command the link sends.
    """
    chunks: list[bytes] = []
    parts: list[bytes] = []
    for args in commands:
        parts.append(b"*%d\r\n" % len(args))
        for arg in args:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode()
            elif kind is int:
                data = b"%d" % arg
            elif kind is float:
                data = repr(arg).encode()
            else:
                raise TypeError(f"Cannot send a {kind.__name__} to Redis: {arg!r:.40}")
            if len(data) > _LARGE_ARGUMENT:
                parts.append(b"$%d\r\n" % len(data))
                chunks.append(b"".join(parts))
                chunks.append(data)
                parts = [b"\r\n"]
            else:
                parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    chunks.append(b"".join(parts))
    return chunks


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
        self._closing: asyncio.Future[None] | None = None  # a stalled connection being closed
        self._loop = asyncio.get_running_loop()
        self.reconnects = 0

    async def call(self, *args: Any) -> Any:
        loop = self._loop
        call = _Call(args, loop.create_future(), loop.time() + self._wait)
        if self._flusher is not None or self._leading:
            # The link is busy: join the next batch, which goes out as soon as the current one is answered.
            self._pending.append(call)
            return await call.future
        # The link is idle: this caller writes its command and reads the reply itself, which saves a task and two
        # trips through the event loop on every command of a lone sender. Calls made meanwhile wait for the next
        # batch, sent by a flusher task once this reply is in.
        self._leading = True
        try:
            await self._run([call])
        except BaseException:
            if not call.future.done():  # cancelled before the command went out (connecting, or checking the link)
                call.future.cancel()
            raise
        finally:
            self._leading = False
            if self._pending and self._flusher is None:
                self._flusher = loop.create_task(self._flush())
        return call.future.result()

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
            self._fail(batch[index:], _unavailable(self._where, error))
        except BaseException:
            await self._drop(connection)
            self._fail(batch[index:], LayerUnavailable(f"The Redis layer's link to {self._where} was closed."))
            raise
        finally:
            watchdog.cancel()
        self._idle_since = self._loop.time()

    def _stall(self, connection: AbstractConnection, stalled: list[bool]) -> None:
        self._closing = _abort(connection, stalled)

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
                    if backoff.attempts or self._idle_since:
                        self.reconnects += 1
                    await connection.connect()
                elif self._loop.time() - self._idle_since > _IDLE_CHECK_AFTER:
                    await connection.send_command("PING", check_health=False)
                    await read_reply(connection, self._timeout)
                return connection
            except _FATAL_CONNECT_ERRORS as exc:
                await self._drop(connection)
                self._fail(batch, LayerUnavailable(f"Redis at {self._where} refused the credentials: {exc}"))
                return None
            except CONNECTION_ERRORS as exc:
                await self._drop(connection)
                now = self._loop.time()
                deadline = batch[0].deadline
                if now >= deadline:
                    self._fail(batch, _unavailable(self._where, exc, now - started))
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


# Blocking reads ----------------------------------------------------------------------------------------------------


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
            watchdog = asyncio.get_running_loop().call_later(self.read_timeout, _abort, connection, stalled)
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

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        self._client_id = None
        if connection is not None:
            await disconnect_quietly(connection)


def _abort(connection: AbstractConnection, stalled: list[bool]) -> asyncio.Future[None]:
    """A watchdog fired: note it and close ``connection``, so the read waiting on it fails."""
    stalled.append(True)
    return asyncio.ensure_future(disconnect_quietly(connection))


async def disconnect_quietly(connection: AbstractConnection) -> None:
    """Close ``connection``, ignoring the errors of one that is already broken."""
    try:
        await connection.disconnect(nowait=True)
    except Exception:  # already broken: nothing more to release
        pass


async def read_reply(connection: AbstractConnection, timeout: float, push: bool = False) -> Any:
    """Read one reply within ``timeout`` seconds, else raise redis-py's ``TimeoutError`` (the caller disconnects).

    redis-py answers a read that timed out with None, which is also the reply to a blocking pop that timed out on
    the server; the time taken tells them apart.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await connection.read_response(timeout=timeout, push_request=push)
    if reply is None and loop.time() - started >= timeout:
        raise redis_errors.TimeoutError(f"No reply within {timeout:g}s")
    return reply


# Endpoints: one host, bound to one event loop ---------------------------------------------------------------------


class Endpoint:
    """What the layers need from one host (or one cluster) on the running event loop."""

    where: str

    def call(self, *args: Any) -> Awaitable[Any]:
        raise NotImplementedError

    async def script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` by SHA, loading it first when the server does not know it (a restart empties the cache)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            return await self.call("EVAL", script.source, len(keys), *keys, *args)

    def blocking_connection(self, key: str) -> BlockingConnection:
        """A dedicated connection for blocking reads of ``key`` (it may only be used for that key's node)."""
        raise NotImplementedError

    async def delete_matching(self, pattern: str) -> int:
        """``SCAN`` for keys matching ``pattern`` and delete them; returns how many."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


def _pool_for(
    spec: HostSpec, socket_timeout: float | None, settings: TransportSettings
) -> tuple[ConnectionPool, Sentinel | None]:
    """A redis-py pool used as a connection factory for ``spec`` (plus the Sentinel manager to close, if any)."""
    options = dict(spec.options)
    options["socket_timeout"] = socket_timeout
    options.setdefault("socket_connect_timeout", min(settings.unavailable_timeout, 5.0))
    if not (spec.url or "").startswith("unix://"):
        options.setdefault("socket_keepalive", True)
    if spec.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

        sentinel_options = dict(spec.sentinel_options)
        sentinel_options.setdefault("socket_timeout", min(settings.unavailable_timeout, 5.0))
        sentinel_options.setdefault("socket_connect_timeout", min(settings.unavailable_timeout, 5.0))
        manager = Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_options, **options)
        pool = SentinelConnectionPool(spec.master_name, manager, **options)
        return pool, manager
    return ConnectionPool.from_url(spec.required_url, **options), None


class NodeEndpoint(Endpoint):
    """A single Redis server, or the master a Sentinel points to."""

    def __init__(self, spec: HostSpec, settings: TransportSettings) -> None:
        self.where = spec.describe()
        self.spec = spec
        # No socket timeout on our connections (redis-py would wrap every write in asyncio.wait_for); the link
        # bounds its reads and large writes itself.
        self._pool, self._manager = _pool_for(spec, None, settings)
        self._blocking_pool, self._blocking_manager = _pool_for(spec, None, settings)
        self.read_timeout = settings.block_timeout + 10.0
        self._blocking: weakref.WeakSet[BlockingConnection] = weakref.WeakSet()
        command_timeout = spec.options.get("socket_timeout") or max(settings.unavailable_timeout, 5.0)
        self.link = Link(self._pool.make_connection, self.where, settings.unavailable_timeout, command_timeout)

    async def call(self, *args: Any) -> Any:
        return await self.link.call(*args)

    def blocking_connection(self, key: str) -> BlockingConnection:
        connection = BlockingConnection(self._blocking_pool.make_connection, self.where, self.read_timeout, self.call)
        self._blocking.add(connection)
        return connection

    def make_connection(self, blocking: bool = True) -> AbstractConnection:
        """A raw redis-py connection (the pub/sub layer's subscriber uses one); a blocking one has no socket timeout:
        bound its reads with ``read_reply``."""
        connection: AbstractConnection = (self._blocking_pool if blocking else self._pool).make_connection()
        return connection

    async def delete_matching(self, pattern: str) -> int:
        deleted = 0
        cursor = 0
        while True:
            cursor, keys = await self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if keys:
                deleted += await self.call("UNLINK", *keys)
            if int(cursor) == 0:
                return deleted

    async def aclose(self) -> None:
        await self.link.aclose()
        for connection in list(self._blocking):
            await connection.aclose()
        for manager in (self._manager, self._blocking_manager):
            if manager is not None:
                await manager.aclose()


class _ClusterBlockingConnection(BlockingConnection):
    def __init__(self, cluster: Any, key: str, where: str) -> None:
        super().__init__(lambda: None, where, 0.0)  # type: ignore[arg-type, return-value]
        self._cluster = cluster
        self._key = key

    async def call(self, *args: Any) -> Any:
        try:
            await self._cluster.initialize()
            node = self._cluster.get_node_from_key(self._key)
            return await self._cluster.execute_command(*args, target_nodes=node)
        except (redis_errors.ClusterError, redis_errors.RedisClusterException) as exc:
            if isinstance(exc, redis_errors.ResponseError) and not isinstance(exc, redis_errors.ClusterDownError):
                raise
            raise redis_errors.ConnectionError(f"the cluster cannot serve {self._key!r} now: {exc}") from exc

    async def aclose(self) -> None:
        return None


class ClusterEndpoint(Endpoint):
    """A Redis Cluster, through redis-py's ``RedisCluster`` (which routes each command to the node of its key)."""

    def __init__(self, spec: HostSpec, settings: TransportSettings) -> None:
        from redis.asyncio.cluster import RedisCluster

        self.where = spec.describe()
        self._timeout = settings.unavailable_timeout
        options = dict(spec.options)
        options.setdefault("socket_timeout", max(settings.unavailable_timeout, 5.0))
        options.setdefault("socket_connect_timeout", min(settings.unavailable_timeout, 5.0))
        self._cluster = RedisCluster.from_url(spec.required_url, **options)
        options["socket_timeout"] = settings.block_timeout + 10.0
        self._blocking_cluster = RedisCluster.from_url(spec.required_url, **options)

    async def call(self, *args: Any) -> Any:
        try:
            return await asyncio.wait_for(self._cluster.execute_command(*args), self._timeout)
        except (*CONNECTION_ERRORS, redis_errors.ClusterError, redis_errors.RedisClusterException) as exc:
            if isinstance(exc, redis_errors.ResponseError) and not isinstance(exc, redis_errors.ClusterDownError):
                raise
            raise _unavailable(self.where, exc, self._timeout) from exc

    def blocking_connection(self, key: str) -> BlockingConnection:
        return _ClusterBlockingConnection(self._blocking_cluster, key, self.where)

    async def delete_matching(self, pattern: str) -> int:
        keys = [key async for key in self._cluster.scan_iter(match=pattern, count=1000)]
        for key in keys:
            await self._cluster.unlink(key)
        return len(keys)

    async def aclose(self) -> None:
        await self._cluster.aclose()
        await self._blocking_cluster.aclose()


def open_endpoint(spec: HostSpec, settings: TransportSettings) -> Endpoint:
    """An endpoint for ``spec`` bound to the running event loop."""
    if spec.kind == "cluster":
        return ClusterEndpoint(spec, settings)
    return NodeEndpoint(spec, settings)


def validate_host(spec: HostSpec, settings: TransportSettings) -> None:
    """Build (without connecting) what ``spec`` needs, so a misspelt connection option fails at configuration time."""
    if spec.kind == "cluster":
        from redis.asyncio.cluster import RedisCluster

        options = dict(spec.options)
        try:
            RedisCluster.from_url(spec.required_url, **options)
        except TypeError as exc:
            raise TypeError(f"Invalid connection option for {spec.describe()}: {exc}") from None
        return
    try:
        pool, _ = _pool_for(spec, 1.0, settings)
        pool.make_connection()
    except TypeError as exc:
        raise TypeError(f"Invalid connection option for {spec.describe()}: {exc}") from None


# Per-event-loop state ----------------------------------------------------------------------------------------------


_State = TypeVar("_State")


class PerLoop(Generic[_State]):
    """State a layer keeps per event loop (asyncio connections belong to the loop that made them).

    ``get()`` returns the state of the running loop, building it with ``factory`` on first use. When a loop that has
    state closes (``async_to_sync`` closes its loop after each call), ``closer`` runs first, so no connection or task
    outlives its loop.
    """

    def __init__(self, factory: Callable[[], _State], closer: Callable[[_State], Awaitable[None]]) -> None:
        self._factory = factory
        self._closer = closer
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _State] = weakref.WeakKeyDictionary()
        self._last: tuple[asyncio.AbstractEventLoop, _State] | None = None  # the hot path's loop, looked up once

    def get(self, loop: asyncio.AbstractEventLoop | None = None) -> _State:
        """The state of ``loop``, by default the running one (pass it when you have it: this is on hot paths)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = self._factory()
            self._hook_close(loop)
        self._last = (loop, state)
        return state

    def peek(self) -> _State | None:
        """The running loop's state, or None when it has none yet."""
        try:
            return self._states.get(asyncio.get_running_loop())
        except RuntimeError:
            return None

    async def close_current(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = None
        state = self._states.pop(loop, None)
        if state is not None:
            await self._closer(state)

    def others(self) -> list[tuple[asyncio.AbstractEventLoop, _State]]:
        loop = asyncio.get_running_loop()
        return [(other, state) for other, state in list(self._states.items()) if other is not loop]

    def _hook_close(self, loop: asyncio.AbstractEventLoop) -> None:
        hooks = getattr(loop, "_tether_close_hooks", None)
        if hooks is None:
            hooks = []
            original_close = loop.close

            def close() -> None:
                for hook in list(hooks):
                    hook(loop)
                hooks.clear()
                original_close()

            try:
                loop.close = close  # type: ignore[method-assign]
                loop._tether_close_hooks = hooks  # type: ignore[attr-defined]
            except (AttributeError, TypeError):  # uvloop and friends: such loops live as long as the process
                return
        hooks.append(self._close_on)

    def _close_on(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._last is not None and self._last[0] is loop:
            self._last = None
        state = self._states.pop(loop, None)
        if state is None or loop.is_closed():
            return
        if loop.is_running():  # closing a running loop fails anyway; leave the state to the garbage collector
            return
        try:
            loop.run_until_complete(self._closer(state))
        except Exception:
            logger.exception("Closing the Redis layer's connections on a closing event loop failed")
