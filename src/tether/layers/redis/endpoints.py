"""Endpoints: what a layer talks to for one host (a server, a Sentinel-managed master, or a Cluster) on one loop.

Built from redis-py's asyncio connection classes, so URLs, TLS, unix sockets, AUTH, ``db`` and Sentinel work as in
redis-py. A server's endpoint holds its command link and makes blocking connections; a Cluster's routes each command
by its key to a link per master (``cluster.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from tether.layers.redis.blocking import BlockingConnection
from tether.layers.redis.config import HostSpec
from tether.layers.redis.link import Link
from tether.layers.redis.storage import Script

if TYPE_CHECKING:
    from redis.asyncio.sentinel import Sentinel

__all__ = ["Endpoint", "NodeEndpoint", "TransportSettings", "open_endpoint", "validate_host"]


@dataclass(frozen=True)
class TransportSettings:
    """How long to wait for Redis, and how long a blocking read blocks server-side before it loops."""

    unavailable_timeout: float
    block_timeout: float = 5.0


class Endpoint:
    """What the layers need from one host (or one cluster) on the running event loop."""

    where: str
    #: How the pub/sub layer publishes here: sharded pub/sub on a cluster (``SPUBLISH``).
    publish_command = "PUBLISH"

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


def open_endpoint(spec: HostSpec, settings: TransportSettings) -> Endpoint:
    """An endpoint for ``spec`` bound to the running event loop."""
    if spec.kind == "cluster":
        from tether.layers.redis.cluster import ClusterEndpoint  # it builds on this module

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
