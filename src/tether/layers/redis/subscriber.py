"""A subscribe-mode connection for the pub/sub layer: subscribes on demand, resubscribes after every reconnect.

One ``Subscriber`` per host and event loop carries every subscription the process holds on that host (its process
topic, its groups, the named channels it receives on). ``subscribe()`` returns once Redis has confirmed the
subscription, so a message published after it returns is delivered. The connection is pinged when idle, so a dead
peer is noticed within two idle periods; after a reconnect every topic is subscribed again, and the gap is logged
(pub/sub keeps nothing for a subscriber that is away).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from tether.exceptions import LayerUnavailable
from tether.layers.redis.endpoints import NodeEndpoint
from tether.layers.redis.failures import CONNECTION_ERRORS, Outage, disconnect_quietly
from tether.layers.redis.resp import read_reply

__all__ = ["Subscriber"]

logger = logging.getLogger("tether.layers.redis")


class Subscriber:
    """Subscriptions on one host; ``on_message(topic, data)`` is called for every message, in arrival order."""

    def __init__(
        self,
        endpoint: NodeEndpoint,
        on_message: Callable[[str, bytes], None],
        outage: Outage,
        confirm_timeout: float,
        idle_timeout: float,
    ) -> None:
        self._endpoint = endpoint
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
            await self._send("SUBSCRIBE", topic)
        try:
            await asyncio.wait_for(future, self._confirm_timeout)
        except asyncio.TimeoutError:
            raise LayerUnavailable(
                f"Redis at {self._endpoint.where} did not confirm a subscription within {self._confirm_timeout:g}s "
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
            await self._send("UNSUBSCRIBE", topic)

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
                connection = self._connection = self._endpoint.make_connection(blocking=True)
                try:
                    await connection.connect()
                    topics = sorted(self._wanted)
                    self._live = True
                    if topics:
                        await connection.send_command("SUBSCRIBE", *topics, check_health=False)
                    await self._read(connection)
                except Exception as exc:  # the connection broke (or worse): back off, resubscribe
                    self._live = False
                    self._active.clear()
                    await disconnect_quietly(connection)
                    await self._outage.wait(
                        self._endpoint.where, exc, "; messages published while it is away are not received"
                    )
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
            pinged = False
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1].decode("ascii"), reply[2])
            elif kind == b"subscribe":
                topic = reply[1].decode("ascii")
                if topic in self._wanted:
                    self._active.add(topic)
                    self._outage.over()
                    for future in self._confirmations.pop(topic, ()):
                        if not future.done():
                            future.set_result(None)

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
