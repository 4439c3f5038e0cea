"""Presence for the Redis layers: members in Redis, one heartbeat per process, dead processes reaped by the living.

The keys, values and scripts are in ``storage.py`` (its docstring is the model); this module runs them. It opens its
own connections to the layer's ``hosts`` (same options, same hash ring, so a key lives where the layer would put it)
and keeps them, with the heartbeat task, per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tether.layers.redis.base import RedisLayerBase
from tether.layers.redis.endpoints import Endpoint, TransportSettings, open_endpoint
from tether.layers.redis.failures import repeat
from tether.layers.redis.per_loop import PerLoop
from tether.layers.redis.sharding import HashRing
from tether.presence.base import Presence, Record
from tether.presence.storage import (
    CLAIM_DEAD,
    HEARTBEAT,
    HEARTBEATS_TAG,
    LEAVE,
    LIVENESS,
    REAP_GROUP,
    REGISTER,
    PresenceKeys,
    pack_member,
    unpack_member,
)

__all__ = ["RedisPresence"]

logger = logging.getLogger("tether.presence")

#: The most stale processes one heartbeat reaps (more wait for the next heartbeat, of this or another process).
_REAP_PER_HEARTBEAT = 8


class _LoopState:
    """Connections and the heartbeat task of one event loop."""

    def __init__(self, size: int) -> None:
        self.endpoints: list[Endpoint | None] = [None] * size
        self.heartbeat: asyncio.Task[None] | None = None


class RedisPresence(Presence):
    """``Presence`` for ``RedisChannelLayer`` and ``RedisPubSubChannelLayer`` (see ``storage.py`` for the model)."""

    def __init__(self, layer: RedisLayerBase[Any], **options: Any) -> None:
        super().__init__(layer, **options)
        hosts = layer.hosts
        self._hosts = hosts
        self._settings = TransportSettings(unavailable_timeout=float(layer.unavailable_timeout))
        self._ring = HashRing([spec.identity for spec in hosts])
        self.keys = PresenceKeys(layer.prefix)
        self._client_id = layer.client_id
        self._incarnation = 0  # 0: not registered yet
        self._ttl_ms = int(self.ttl * 1000)
        self._loops: PerLoop[_LoopState] = PerLoop(lambda: _LoopState(len(hosts)), self._close_state)

    @property
    def process(self) -> str:
        """This process's key in the heartbeat set: ``<client id>.<incarnation>``."""
        return f"{self._client_id}.{self._incarnation}"

    def _endpoint(self, tag: str) -> Endpoint:
        state = self._loops.get()
        index = self._ring.index_for(tag)
        endpoint = state.endpoints[index]
        if endpoint is None:
            endpoint = state.endpoints[index] = open_endpoint(self._hosts[index], self._settings)
        return endpoint

    # Storage -------------------------------------------------------------------------------------------------------

    async def _running(self) -> None:
        """Make sure this process heartbeats on this loop: it holds members, or it lists groups and so takes part in
        reaping dead processes (whose leave events its listeners want)."""
        state = self._loops.get()
        if state.heartbeat is not None and not state.heartbeat.done():
            return
        first = not self._incarnation
        if first:
            self._incarnation = 1
        # The task is set before any await, so concurrent callers start one heartbeat only.
        state.heartbeat = asyncio.get_running_loop().create_task(self._beat())
        if first:
            await self._endpoint(HEARTBEATS_TAG).script(REGISTER, [self.keys.heartbeats], [self.process])
        else:  # heartbeating again after a gap (its loop closed): reaped meanwhile, it comes back
            await self._beat_once()

    async def _store_join(self, group: str, record: Record, first: bool) -> bool:
        await self._running()
        process = self.process
        if first:  # the group is new to this process: the reaper must know of it first
            await self._endpoint("!" + process).call("SADD", self.keys.groups_of(process), group)
        new = await self._endpoint(group).call(
            "HSET", self.keys.members(group), record.channel, pack_member(process, record)
        )
        return bool(new)

    async def _store_leave(self, group: str, channel: str) -> Record | None:
        value = await self._endpoint(group).script(LEAVE, [self.keys.members(group)], [channel])
        # Checked after the await: a join that started meanwhile is in self.local already, and keeps the group.
        if group not in self.local and self._incarnation:
            await self._endpoint("!" + self.process).call("SREM", self.keys.groups_of(self.process), group)
        if value is None:
            return None
        return unpack_member(channel, value)[1]

    async def _store_list(self, group: str) -> list[Record]:
        await self._running()
        raw = await self._endpoint(group).call("HGETALL", self.keys.members(group))
        if not raw:
            return []
        entries: list[tuple[str, Record]] = []
        items = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        for field, value in items:
            channel = field.decode("ascii") if isinstance(field, bytes) else field
            try:
                entries.append(unpack_member(channel, value))
            except ValueError:
                logger.warning("Presence group %r holds an unreadable member %r; it is ignored", group, channel)
        processes = sorted({process for process, _ in entries})
        now, scores = await self._endpoint(HEARTBEATS_TAG).script(LIVENESS, [self.keys.heartbeats], processes)
        cutoff = int(now) - self._ttl_ms
        live = {process for process, score in zip(processes, scores, strict=True) if score and float(score) >= cutoff}
        return [record for process, record in entries if process in live]

    # Heartbeat -----------------------------------------------------------------------------------------------------

    async def _beat(self) -> None:
        """Every ``heartbeat`` seconds: refresh this process's score, come back if it was reaped, reap the dead."""
        await repeat(self.heartbeat, self._beat_once, self._heartbeat_failed, self._heartbeat_back)

    def _heartbeat_failed(self, exc: Exception) -> None:
        logger.warning(
            "Presence heartbeat of process %r failed (%s); its members are dropped by other processes if this lasts "
            "over %gs (ttl)",
            self.process,
            exc,
            self.ttl,
        )

    def _heartbeat_back(self) -> None:
        logger.warning("Presence heartbeat of process %r works again", self.process)

    async def _beat_once(self) -> None:
        alive, stale = await self._endpoint(HEARTBEATS_TAG).script(
            HEARTBEAT, [self.keys.heartbeats], [self.process, self._ttl_ms, _REAP_PER_HEARTBEAT]
        )
        if not alive:
            await self._come_back()
        for process in stale:
            await self._reap(process.decode("ascii") if isinstance(process, bytes) else process)

    async def _come_back(self) -> None:
        """This process was declared dead (no heartbeat for ``ttl``) and reaped: store its members again under a new
        incarnation, and announce those that had been removed."""
        logger.warning(
            "Presence: process %r missed its heartbeats for over %gs and was reaped; its members join again",
            self.process,
            self.ttl,
        )
        self._incarnation += 1
        process = self.process
        await self._endpoint(HEARTBEATS_TAG).script(REGISTER, [self.keys.heartbeats], [process])
        for group, records in list(self.local.items()):
            await self._endpoint("!" + process).call("SADD", self.keys.groups_of(process), group)
            rejoined = []
            for record in list(records.values()):
                members = self.keys.members(group)
                if await self._endpoint(group).call("HSET", members, record.channel, pack_member(process, record)):
                    rejoined.append(record)
            if rejoined:
                self._announce(group, joined=rejoined)

    async def _reap(self, process: str) -> None:
        """Remove a dead process's members from each of its groups and announce them, one event per group."""
        claimed = await self._endpoint(HEARTBEATS_TAG).script(
            CLAIM_DEAD, [self.keys.heartbeats], [process, self._ttl_ms]
        )
        if not claimed:
            return  # another process reaps it, or it came back
        groups_key = self.keys.groups_of(process)
        groups = await self._endpoint("!" + process).call("SMEMBERS", groups_key)
        names = [group.decode("ascii") if isinstance(group, bytes) else group for group in groups]
        # Concurrent calls share round trips (the link batches them), so a process in many groups is reaped quickly.
        results = await asyncio.gather(
            *(self._endpoint(group).script(REAP_GROUP, [self.keys.members(group)], [process]) for group in names)
        )
        for group, removed in zip(names, results, strict=True):
            records = []
            for field, value in zip(removed[::2], removed[1::2], strict=True):
                with contextlib.suppress(ValueError):
                    records.append(unpack_member(field.decode("ascii"), value)[1])
            if records:
                self._announce(group, left=records)
        await self._endpoint("!" + process).call("DEL", groups_key)
        logger.info(
            "Presence: reaped process %r (no heartbeat for %gs) from %d group(s)", process, self.ttl, len(groups)
        )

    # Closing -------------------------------------------------------------------------------------------------------

    async def _stop(self) -> None:
        await super()._stop()
        state = self._loops.peek()
        # Out of the heartbeat set only when every member left: one left behind must go stale, so that a live
        # process reaps and announces it (absent, it would only be hidden from the lists).
        if state is not None and self._incarnation and not self.local:
            with contextlib.suppress(Exception):
                await self._endpoint(HEARTBEATS_TAG).call("ZREM", self.keys.heartbeats, self.process)
                await self._endpoint("!" + self.process).call("DEL", self.keys.groups_of(self.process))
        self._incarnation = 0
        await self._loops.close_current()

    async def _close_state(self, state: _LoopState) -> None:
        if state.heartbeat is not None:
            state.heartbeat.cancel()
            await asyncio.gather(state.heartbeat, return_exceptions=True)
            state.heartbeat = None
        for endpoint in state.endpoints:
            if endpoint is not None:
                await endpoint.aclose()
        state.endpoints = [None] * len(state.endpoints)
