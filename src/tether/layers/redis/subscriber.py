"""A subscribe-mode connection for the pub/sub layer: subscribes on demand, resubscribes after every reconnect.

One ``Subscriber`` per host and event loop carries every subscription the process holds on that host (its process
topic, its groups, the named channels it receives on). On a Redis Cluster, a ``ClusterSubscriber`` holds one sharded
``Subscriber`` (``SSUBSCRIBE``) per master and moves a topic to its slot's new owner when Redis says the slot moved
(a ``sunsubscribe`` it did not ask for, or a ``MOVED`` reply) or the master is lost.

``subscribe()`` returns once Redis has confirmed the subscription, so a message published after it returns is delivered.
The connection is pinged when idle, so a dead peer is noticed within two idle periods; after a reconnect every topic is
subscribed again, and the gap is logged (pub/sub keeps nothing for a subscriber that is away).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from tether.exceptions import LayerUnavailable
from tether.layers.redis.cluster import ClusterEndpoint, slot_of
from tether.layers.redis.failures import CONNECTION_ERRORS, Backoff, Outage, disconnect_quietly
from tether.layers.redis.resp import read_reply

__all__ = ["ClusterSubscriber", "Subscriber"]

logger = logging.getLogger("tether.layers.redis")

#: How many times a cluster subscription follows its slot to another master before giving up (a map in flux).
_MAX_MOVES = 5


class _TopicMoved(Exception):
    """A sharded subscription was refused or dropped because its slot is on another master now."""


class Subscriber:
    """Subscriptions on one host; ``on_message(topic, data)`` is called for every message, in arrival order.

    ``make_connection`` makes a connection without a socket timeout to the host described by ``where``. With
    ``on_moved`` (a cluster master's subscriber), subscriptions are sharded, and the topics whose slot left this
    master, or whose master was lost, are handed to ``on_moved`` and forgotten here.
    """

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        where: str,
        on_message: Callable[[str, bytes], None],
        outage: Outage,
        confirm_timeout: float,
        idle_timeout: float,
        on_moved: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._make_connection = make_connection
        self.where = where
        self._on_moved = on_moved
        sharded = on_moved is not None
        self._subscribe_command = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unsubscribe_command = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        self._message_kind = b"smessage" if sharded else b"message"
        self._confirm_kind = b"ssubscribe" if sharded else b"subscribe"
        self._on_message = on_message
        self._outage = outage
        self._confirm_timeout = confirm_timeout
        self._idle_timeout = idle_timeout
        self._wanted: set[str] = set()
        self._active: set[str] = set()
        self._confirmations: dict[str, list[asyncio.Future[None]]] = {}
        self._connection: AbstractConnection | None = None
        self._live = False
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, topic: str) -> None:
        """Subscribe to ``topic`` and wait for Redis to confirm it (``LayerUnavailable`` after the bounded wait)."""
        if topic in self._active:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(topic, []).append(future)
        new = topic not in self._wanted
        self._wanted.add(topic)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif new and self._live:
            await self._send(self._subscribe_command, topic)
        try:
            await asyncio.wait_for(future, self._confirm_timeout)
        except asyncio.TimeoutError:
            raise LayerUnavailable(
                f"Redis at {self.where} did not confirm a subscription within {self._confirm_timeout:g}s "
                "(unavailable_timeout)."
            ) from None
        finally:
            waiting = self._confirmations.get(topic)
            if waiting is not None and future in waiting:
                waiting.remove(future)

    async def unsubscribe(self, topic: str) -> None:
        self._wanted.discard(topic)
        self._active.discard(topic)
        if self._live:
            await self._send(self._unsubscribe_command, topic)

    async def _send(self, *args: str) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            await connection.send_command(*args, check_health=False)
        except CONNECTION_ERRORS:
            pass  # the connection is gone; the receive loop reconnects and subscribes again

    async def _run(self) -> None:
        try:
            while True:
                connection = self._connection = self._make_connection()
                try:
                    await connection.connect()
                    topics = sorted(self._wanted)
                    self._live = True
                    if topics and self._on_moved is None:
                        await connection.send_command("SUBSCRIBE", *topics, check_health=False)
                    for topic in topics if self._on_moved is not None else ():
                        # One SSUBSCRIBE per topic: the topics of one command must share a slot.
                        await connection.send_command("SSUBSCRIBE", topic, check_health=False)
                    await self._read(connection)
                except Exception as exc:  # the connection broke (or worse): back off, resubscribe
                    self._live = False
                    self._active.clear()
                    await disconnect_quietly(connection)
                    if self._on_moved is not None and self._wanted:
                        # A cluster master lost: a failover may have given its slots to another, so the cluster
                        # subscriber places every topic again by a fresh slot map.
                        self._hand_over(list(self._wanted))
                    await self._outage.wait(self.where, exc, "; messages published while it is away are not received")
                    if self._on_moved is not None and not self._wanted:
                        return
        finally:
            self._live = False
            self._active.clear()
            if self._connection is not None:
                await disconnect_quietly(self._connection)

    async def _read(self, connection: AbstractConnection) -> None:
        """Read messages; when the connection stays quiet for ``idle_timeout``, PING it, and give up on it when the
        PONG does not come within another ``idle_timeout``."""
        pinged = False
        while True:
            try:
                reply = await read_reply(connection, self._idle_timeout, push=True)
            except redis_errors.TimeoutError:
                if pinged:
                    raise
                await connection.send_command("PING", check_health=False)
                pinged = True
                continue
            except redis_errors.MovedError as exc:  # a sharded subscription to a slot this master no longer has
                self._hand_over([topic for topic in self._wanted if slot_of(topic) == exc.slot_id])
                continue
            pinged = False
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == self._message_kind:
                self._on_message(reply[1].decode("ascii"), reply[2])
            elif kind == b"sunsubscribe" and self._on_moved is not None:
                topic = reply[1].decode("ascii")
                if topic in self._wanted:  # not asked for: Redis dropped it as its slot moved to another master
                    self._hand_over([topic])
            elif kind == self._confirm_kind:
                topic = reply[1].decode("ascii")
                if topic in self._wanted:
                    self._active.add(topic)
                    self._outage.over()
                    for future in self._confirmations.pop(topic, ()):
                        if not future.done():
                            future.set_result(None)

    def _hand_over(self, topics: list[str]) -> None:
        """Forget ``topics`` here and give them to ``on_moved``, which subscribes them where they are now; a
        ``subscribe()`` waiting for one of them raises ``_TopicMoved`` rather than wait out its bound."""
        for topic in topics:
            self._wanted.discard(topic)
            self._active.discard(topic)
            for future in self._confirmations.pop(topic, ()):
                if not future.done():
                    future.set_exception(_TopicMoved(topic))
        if topics and self._on_moved is not None:
            self._on_moved(topics)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._wanted.clear()
        for futures in self._confirmations.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._confirmations.clear()


class ClusterSubscriber:
    """Sharded subscriptions on a Redis Cluster: a ``Subscriber`` per master, each topic on its slot's owner.

    A topic whose slot moved, or whose master was lost, is subscribed again on the owner a fresh slot map names, by
    a task of this subscriber's own that retries with backoff until it succeeds or the topic is unsubscribed.
    """

    def __init__(
        self,
        endpoint: ClusterEndpoint,
        on_message: Callable[[str, bytes], None],
        outage: Callable[[], Outage],
        confirm_timeout: float,
        idle_timeout: float,
    ) -> None:
        self._endpoint = endpoint
        self._on_message = on_message
        self._outage = outage
        self._confirm_timeout = confirm_timeout
        self._idle_timeout = idle_timeout
        self._masters: dict[str, Subscriber] = {}
        self._placed: dict[str, str] = {}  # topic -> the master subscribed to it
        self._moving: set[str] = set()
        self._mover: asyncio.Task[None] | None = None

    async def subscribe(self, topic: str) -> None:
        """Subscribe to ``topic`` on its master, following its slot when the map was stale (``LayerUnavailable``
        when the cluster cannot confirm it in time)."""
        for _ in range(_MAX_MOVES):
            try:
                node = await self._endpoint.owner(slot_of(topic))
            except (redis_errors.RedisClusterException, *CONNECTION_ERRORS) as exc:
                raise LayerUnavailable(
                    f"Redis Cluster at {self._endpoint.where} cannot place {topic!r}: {exc}"
                ) from exc
            self._placed[topic] = node.name
            try:
                await self._master(node.name, node.host, int(node.port)).subscribe(topic)
                return
            except _TopicMoved:
                await self._endpoint.refresh()
        raise LayerUnavailable(f"Redis Cluster at {self._endpoint.where} kept moving the slot of {topic!r}.")

    async def unsubscribe(self, topic: str) -> None:
        self._moving.discard(topic)
        name = self._placed.pop(topic, None)
        subscriber = self._masters.get(name) if name is not None else None
        if subscriber is not None:
            await subscriber.unsubscribe(topic)

    def _master(self, name: str, host: str, port: int) -> Subscriber:
        subscriber = self._masters.get(name)
        if subscriber is None:
            subscriber = self._masters[name] = Subscriber(
                self._endpoint.connection_factory(host, port),
                f"{name} of {self._endpoint.where}",
                self._on_message,
                self._outage(),
                self._confirm_timeout,
                self._idle_timeout,
                on_moved=self._moved,
            )
        return subscriber

    def _moved(self, topics: list[str]) -> None:
        self._moving.update(topic for topic in topics if topic in self._placed)
        if self._moving and (self._mover is None or self._mover.done()):
            self._mover = asyncio.get_running_loop().create_task(self._move())

    async def _move(self) -> None:
        backoff = Backoff()
        while self._moving:
            await self._endpoint.refresh()
            for topic in sorted(self._moving):
                try:
                    await self.subscribe(topic)
                except LayerUnavailable as exc:
                    logger.debug("Could not subscribe to %s again yet: %s", topic, exc)
                    continue
                self._moving.discard(topic)
            if self._moving:
                await asyncio.sleep(backoff.next_delay())

    async def aclose(self) -> None:
        mover, self._mover = self._mover, None
        if mover is not None:
            mover.cancel()
            await asyncio.gather(mover, return_exceptions=True)
        for subscriber in self._masters.values():
            await subscriber.aclose()
        self._masters.clear()
        self._placed.clear()
        self._moving.clear()
