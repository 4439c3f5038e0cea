"""Redis Cluster: commands batched per node, routed by the slot map that redis-py's cluster client keeps.

redis-py's ``RedisCluster`` learns the slot map (``CLUSTER SLOTS``) and corrects it from ``MOVED`` replies; tether
uses its ``NodesManager`` for that and nothing else. Each master gets a ``Link`` (the coalescing link of a single
server), so the commands issued concurrently to one node go out in one write, and its blocking reads get their own
connections to that node, which ``close()`` unblocks with ``CLIENT UNBLOCK`` through the node's link. Every key a
command touches carries one hash tag (see ``storage.py``), so the first key names the slot.

Redirections are followed, and none of them ran the command, so sending it again never duplicates it: ``MOVED`` (the
slot has a new owner: the map is corrected and the command goes there), ``ASK`` (the slot is migrating and the key
is on the target already: ``ASKING`` and the command go there back to back, the map unchanged), ``TRYAGAIN`` and
``CLUSTERDOWN`` (wait and retry). A command whose node could not be reached never left either: the map is
refreshed and the command goes to the slot's owner now (a failover), until ``unavailable_timeout``. A command whose
connection broke after it was written fails with ``LayerUnavailable``, as on a single server: it may have run.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.crc import key_slot

from tether.layers.redis.blocking import BlockingConnection
from tether.layers.redis.endpoints import Endpoint, TransportSettings
from tether.layers.redis.failures import CONNECTION_ERRORS, Backoff, Unreached, unavailable
from tether.layers.redis.link import Link

if TYPE_CHECKING:
    from redis.asyncio.cluster import ClusterNode

__all__ = ["ClusterBlockingConnection", "ClusterEndpoint", "command_key", "slot_of"]

logger = logging.getLogger("tether.layers.redis")

#: Commands whose keys follow a key count at index 2 (``EVALSHA sha numkeys key ...``).
_KEYS_AFTER_COUNT = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
#: Commands that name no key: they go to any master.
_KEYLESS = frozenset({"PING", "SCAN", "CLIENT", "INFO", "CLUSTER", "ASKING", "SCRIPT", "FUNCTION", "TIME"})
#: Redirections followed in a row before a command waits and tries again (a slot map that keeps changing).
_MAX_REDIRECTS = 5
#: How long a command waits for one node before the slot map is refreshed (a failover may have moved the slot).
_NODE_WAIT = 1.0


def command_key(args: tuple[Any, ...]) -> str | bytes | None:
    """The key that routes the command ``args`` (its first key), or None for a command that names no key."""
    name = str(args[0]).upper()
    index = 1
    if name in _KEYS_AFTER_COUNT:
        if int(args[2]) == 0:
            return None
        index = 3
    elif name in ("BLMPOP", "BZMPOP"):
        index = 3
    elif name in ("LMPOP", "ZMPOP"):
        index = 2
    elif name in ("XREAD", "XREADGROUP"):
        words = [arg.upper() if isinstance(arg, str) else arg for arg in args]
        index = words.index("STREAMS") + 1
    elif name in _KEYLESS or len(args) < 2:
        return None
    key: str | bytes = args[index]
    return key


def slot_of(key: str | bytes) -> int:
    """The hash slot of ``key`` (its ``{hash tag}`` when it has one), as the cluster computes it."""
    return key_slot(key.encode() if isinstance(key, str) else key)


class ClusterEndpoint(Endpoint):
    """A Redis Cluster on one event loop: a link per master, routed by slot."""

    publish_command = "SPUBLISH"  # a topic lives on its slot's master, not broadcast over the cluster bus

    def __init__(self, spec: Any, settings: TransportSettings) -> None:
        from redis.asyncio.cluster import RedisCluster

        self.where = spec.describe()
        self._wait = settings.unavailable_timeout
        self.read_timeout = settings.block_timeout + 10.0
        options = dict(spec.options)
        command_timeout = options.get("socket_timeout") or max(settings.unavailable_timeout, 5.0)
        self._command_timeout = float(command_timeout)
        options.setdefault("socket_connect_timeout", min(settings.unavailable_timeout, 5.0))
        options.setdefault("socket_keepalive", True)
        # The slot map only: commands never go through RedisCluster, so its pools stay empty.
        self._cluster = RedisCluster.from_url(spec.required_url, **{**options, "socket_timeout": command_timeout})
        # Our own connections are made as for a single server (TLS, AUTH, ...), to each node's address, without a
        # socket timeout: the link bounds its exchanges itself.
        options["socket_timeout"] = None
        self._factory = ConnectionPool.from_url(spec.required_url, **options)
        self._links: dict[str, Link] = {}
        self._blocking: weakref.WeakSet[BlockingConnection] = weakref.WeakSet()
        self._mapped = False
        self._refreshing: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    # Routing --------------------------------------------------------------------------------------------------------

    def connection_factory(self, host: str, port: int) -> Callable[[], AbstractConnection]:
        """Make connections to the node at ``host:port`` with the options of the host entry."""
        factory = self._factory
        kwargs = {**factory.connection_kwargs, "host": host, "port": port}
        kwargs.pop("path", None)

        def make() -> AbstractConnection:
            connection: AbstractConnection = factory.connection_class(**kwargs)
            return connection

        return make

    def link_to(self, host: str, port: int) -> Link:
        """The command link to the node at ``host:port`` (made on first use)."""
        name = f"{host}:{port}"
        link = self._links.get(name)
        if link is None:
            wait = min(self._wait, _NODE_WAIT)
            make = self.connection_factory(host, port)
            link = self._links[name] = Link(make, f"{name} of {self.where}", wait, self._command_timeout)
        return link

    async def owner(self, slot: int) -> ClusterNode:
        """The master serving ``slot`` by the current map (learnt on first use). Raises ``SlotNotCoveredError`` or
        a connection error when the cluster cannot say."""
        if not self._mapped:
            await self._cluster.initialize()
            self._mapped = True
        return self._cluster.nodes_manager.get_node_from_slot(slot)

    async def moved(self, error: redis_errors.MovedError) -> None:
        """Correct the map from a ``MOVED`` reply."""
        await self._cluster.nodes_manager.move_slot(error)

    async def refresh(self) -> None:
        """Read the slot map again (one refresh at a time, shared by everyone who asks meanwhile)."""
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = self._loop.create_task(self._refresh())
        await asyncio.shield(task)

    async def _refresh(self) -> None:
        try:
            await self._cluster.nodes_manager.initialize()
            self._mapped = True
        except Exception as exc:  # no node answered: the command that asked waits and asks again
            logger.debug("Could not refresh the slot map of %s: %s", self.where, exc)

    # Commands -------------------------------------------------------------------------------------------------------

    async def call(self, *args: Any) -> Any:
        key = command_key(args)
        slot = 0 if key is None else slot_of(key)
        loop = self._loop
        started = loop.time()
        deadline = started + self._wait
        backoff = Backoff()
        asking: tuple[str, int] | None = None
        redirects = 0
        while True:
            try:
                if asking is not None:
                    return await self.link_to(*asking).call_sequence(("ASKING",), args)
                node = await self.owner(slot)
                return await self.link_to(node.host, int(node.port)).call(*args)
            except redis_errors.MovedError as exc:
                error: BaseException = exc
                asking = None
                await self.moved(exc)
            except redis_errors.AskError as exc:
                error = exc
                asking = (exc.host, int(exc.port))
            except (redis_errors.TryAgainError, redis_errors.ClusterDownError) as exc:
                error, asking, redirects = exc, None, _MAX_REDIRECTS
            except (Unreached, redis_errors.SlotNotCoveredError, redis_errors.RedisClusterException) as exc:
                error, asking, redirects = exc, None, _MAX_REDIRECTS
                await self.refresh()
            except CONNECTION_ERRORS as exc:  # learning the map at first use failed: nothing was sent
                error, asking, redirects = exc, None, _MAX_REDIRECTS
            redirects += 1
            if redirects <= _MAX_REDIRECTS:
                continue
            now = loop.time()
            if now >= deadline:
                raise unavailable(self.where, error, now - started) from error
            await asyncio.sleep(min(backoff.next_delay(), deadline - now))
            redirects = 0

    def blocking_connection(self, key: str) -> BlockingConnection:
        connection = ClusterBlockingConnection(self, key)
        self._blocking.add(connection)
        return connection

    async def delete_matching(self, pattern: str) -> int:
        await self.owner(0)
        deleted = 0
        for node in self._cluster.get_primaries():
            link = self.link_to(node.host, int(node.port))
            cursor = 0
            while True:
                cursor, keys = await link.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                # One UNLINK per key (keys of different slots cannot share one), issued together: one write.
                deleted += sum(await asyncio.gather(*(self.call("UNLINK", key) for key in keys)))
                if int(cursor) == 0:
                    break
        return deleted

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        for connection in list(self._blocking):
            await connection.aclose()
        for link in list(self._links.values()):
            await link.aclose()
        self._links.clear()
        await self._cluster.aclose()
        await self._factory.disconnect()


class ClusterBlockingConnection(BlockingConnection):
    """Blocking reads of one key on a Redis Cluster: a connection to the master holding the key's slot, moved to
    the new owner after a ``MOVED``; ``unblock()`` sends ``CLIENT UNBLOCK`` through that master's link.

    A read of a slot being migrated (``ASK``, ``TRYAGAIN``) waits a moment and tries again until the migration
    ends; messages written to the target meanwhile are read then.
    """

    def __init__(self, endpoint: ClusterEndpoint, key: str) -> None:
        # No master yet: call() points the connection (and CLIENT UNBLOCK) at the slot's owner before each use.
        super().__init__(endpoint.connection_factory("", 0), endpoint.where, endpoint.read_timeout)
        self._endpoint = endpoint
        self._slot = slot_of(key)
        self._node: str | None = None

    async def call(self, *args: Any) -> Any:
        backoff = Backoff(first=0.02, cap=0.5)
        for _ in range(50):
            try:
                node = await self._endpoint.owner(self._slot)
            except (redis_errors.RedisClusterException, *CONNECTION_ERRORS) as exc:
                await self._endpoint.refresh()
                raise redis_errors.ConnectionError(f"the cluster cannot say where slot {self._slot} is: {exc}") from exc
            if node.name != self._node:
                await self.aclose()
                self._node = node.name
                self._make_connection = self._endpoint.connection_factory(node.host, int(node.port))
                self._command = self._endpoint.link_to(node.host, int(node.port)).call
            try:
                return await super().call(*args)
            except redis_errors.MovedError as exc:
                await self._endpoint.moved(exc)
            except (redis_errors.AskError, redis_errors.TryAgainError, redis_errors.ClusterDownError):
                await asyncio.sleep(backoff.next_delay())
            except CONNECTION_ERRORS:
                await self._endpoint.refresh()  # a failover may have moved the slot: the next call goes there
                raise
        raise redis_errors.ConnectionError(f"slot {self._slot} of {self.where} kept moving")
