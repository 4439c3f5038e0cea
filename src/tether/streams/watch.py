"""The watch: a process's stream subscribers stay subscribed, and are told to catch up, when Redis loses its data.

A Redis restarted without persistence (or flushed, or failed over to a replica that missed writes) has forgotten the
streams' histories and, on ``RedisChannelLayer``, the groups: a process's subscribed channels would hear nothing more,
and nobody would tell them. So every ``interval`` seconds, on each event loop whose channels subscribe to streams, the
watch reads in one ``STREAM_WATCH`` call per Redis host (per slot on a cluster, ``storage.py``), for each of those
streams, its epoch and last offset and, on ``RedisChannelLayer``, how many of this process's memberships are there.

A stream is **lost** when its epoch is not the one this process saw last (its history started again), or when fewer of
this process's memberships are there than it subscribed. Then its local subscribers are added to its group again,
its position is read again (after: so a message published meanwhile either reaches them live or is in the history
after that position), and ``{"type": "stream.reset", "stream", "epoch", "offset"}`` is sent to the group. A subscriber
that is behind that position catches up: ``StreamConsumer`` recovers from its own position, and so sends what it
missed or a ``reload`` frame. A stream without an epoch (nothing published since its history went) needs no telling:
the first message of its new epoch reaches the subscribers, which the epoch change sends to recovery.

A subscriber can also fall behind while Redis keeps everything: a burst fills its channel (the layer's ``capacity``)
and the layer drops the messages that do not fit. It notices a gap when the next message arrives, but the end of a
burst has no next message. So the layer tells the watch of each group message it could not deliver to a channel of
this process, and the next check sends that channel ``stream.reset`` with the stream's position: it catches up from
history within ``interval`` seconds (one message per such channel; none when nothing was dropped).

The cost: one script call per host (or slot) per interval per event loop, whatever the number of subscribers; the
reads are ``HMGET`` and ``ZCOUNT`` per stream, at most ``BATCH`` streams per call. Only a loss costs per subscriber
(a ``group_add`` each, and a recovery by each ``StreamConsumer`` behind the new position).

``Subscriptions`` is the bookkeeping, without I/O; ``StreamWatch`` runs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from tether.layers.redis.cluster import ClusterEndpoint, slot_of
from tether.layers.redis.endpoints import Endpoint
from tether.layers.redis.failures import repeat
from tether.layers.redis.per_loop import PerLoop
from tether.layers.redis.storage import client_id_of, now_ms
from tether.streams.base import stream_reset
from tether.streams.storage import STREAM_WATCH, as_text

if TYPE_CHECKING:
    from tether.streams.redis import RedisStreams

__all__ = ["BATCH", "Reading", "StreamWatch", "Subscriptions"]

logger = logging.getLogger("tether.streams")

#: The most streams one ``STREAM_WATCH`` call reads: Redis runs a script alone, and 200 streams (with 10 members of
#: this process each) took 0.65 to 0.7 ms of its time, 1,000 took 4.4 to 4.9 ms (INFO commandstats, a shared 2-core
#: machine at load 13); more streams are read by more calls, issued together.
BATCH = 200

#: What the watch reads of one stream: its epoch ("" when it has none), its last offset, and how many of this
#: process's memberships are in Redis (-1 when the layer keeps memberships in the process: the pub/sub layer).
Reading = tuple[str, int, int]


class Subscriptions:
    """The channels of one event loop subscribed to each stream (when, in ms), and the epoch of each stream this
    process saw last. ``client_id``: the layer's, whose channels' memberships Redis counts per process (None when
    it counts none); ``lifetime_ms``: the layer's ``group_expiry``, after which a membership is forgotten here too,
    as the layer forgets it."""

    def __init__(self, client_id: str | None, lifetime_ms: int) -> None:
        self._client_id = client_id
        self._lifetime_ms = lifetime_ms
        self._channels: dict[str, dict[str, int]] = {}
        self._epochs: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._channels)

    def add(self, stream: str, channel: str, now: int) -> None:
        self._channels.setdefault(stream, {})[channel] = now

    def discard(self, stream: str, channel: str) -> None:
        channels = self._channels.get(stream)
        if channels is not None and channels.pop(channel, None) is not None and not channels:
            del self._channels[stream]
            self._epochs.pop(stream, None)

    def has(self, stream: str, channel: str) -> bool:
        return channel in self._channels.get(stream, ())

    def streams(self) -> list[str]:
        return list(self._channels)

    def channels(self, stream: str, now: int) -> list[str]:
        """The channels subscribed to ``stream``, without those older than the lifetime (forgotten now)."""
        channels = self._channels.get(stream)
        if channels is None:
            return []
        cutoff = now - self._lifetime_ms
        for channel in [channel for channel, since in channels.items() if since < cutoff]:
            self.discard(stream, channel)
        return list(channels)

    def renewed(self, stream: str, channels: list[str], now: int) -> None:
        """``channels`` joined ``stream``'s group again at ``now``."""
        kept = self._channels.get(stream, {})
        for channel in channels:
            if channel in kept:
                kept[channel] = now

    def saw(self, stream: str, epoch: str) -> None:
        """Take ``epoch`` as the one a subscriber of ``stream`` follows, unless one is known already (a subscribe
        reads the position after joining: the first epoch read is the one its subscribers start from)."""
        if stream in self._channels and epoch:
            self._epochs.setdefault(stream, epoch)

    def told(self, stream: str, epoch: str) -> None:
        """The subscribers of ``stream`` were sent its position in ``epoch``."""
        if stream in self._channels:
            self._epochs[stream] = epoch

    def lost(self, stream: str, reading: Reading, now: int) -> bool:
        """Whether ``stream`` lost its history (another epoch than the last seen) or some of this process's
        memberships, by ``reading``; the first epoch read of a stream is taken as the one seen."""
        epoch, _, present = reading
        channels = self.channels(stream, now)
        if not channels:
            return False
        if present >= 0 and self._client_id is not None:
            ours = sum(1 for channel in channels if client_id_of(channel) == self._client_id)
            if present < ours:
                return True
        if not epoch:
            return False  # no history at all: the next publish makes an epoch, and it reaches the subscribers
        known = self._epochs.setdefault(stream, epoch)
        return known != epoch


class _LoopWatch:
    """The watch on one event loop: its subscriptions, the subscribers that missed a message, and its task."""

    def __init__(self, subscriptions: Subscriptions) -> None:
        self.subscriptions = subscriptions
        #: (stream, channel): a message of the stream was dropped for the channel (full) since the last check.
        self.behind: set[tuple[str, str]] = set()
        self.task: asyncio.Task[None] | None = None


class StreamWatch:
    """Runs ``Subscriptions`` for ``RedisStreams``: a task per event loop with subscribers, checking every
    ``interval`` seconds (see the module docs)."""

    def __init__(self, streams: RedisStreams, interval: float, client_id: str | None) -> None:
        """``client_id``: the layer's when it keeps each process's memberships in Redis (``RedisChannelLayer``),
        None when it keeps them in the process (the pub/sub layer: only epochs are watched)."""
        self.interval = interval
        self._streams = streams
        self._client_id = client_id
        self._lifetime_ms = int(streams.redis_layer.group_expiry * 1000)
        self._loops: PerLoop[_LoopWatch] = PerLoop(
            lambda: _LoopWatch(Subscriptions(self._client_id, self._lifetime_ms)), self._close_state
        )
        streams.redis_layer.group_drop_listeners.append(self._dropped)

    # Bookkeeping, from RedisStreams --------------------------------------------------------------------------------

    def add(self, stream: str, channel: str) -> None:
        """Watch ``stream`` for ``channel`` (before it joins the group, so a loss in between is noticed)."""
        state = self._loops.get()
        state.subscriptions.add(stream, channel, now_ms())
        if state.task is None or state.task.done():
            state.task = asyncio.get_running_loop().create_task(self._run(state))

    def discard(self, stream: str, channel: str) -> None:
        state = self._loops.peek()
        if state is None:
            return
        state.subscriptions.discard(stream, channel)
        if not state.subscriptions and state.task is not None:
            state.task.cancel()
            state.task = None

    def _dropped(self, group: str, channel: str) -> None:
        """The layer could not deliver a message of ``group`` to ``channel`` (full): if that is a subscription, the
        next check catches the channel up."""
        state = self._loops.peek()
        if state is not None and state.subscriptions.has(group, channel):
            state.behind.add((group, channel))

    def saw(self, stream: str, epoch: str) -> None:
        """A position of ``stream`` was read in ``epoch`` on this loop."""
        state = self._loops.peek()
        if state is not None:
            state.subscriptions.saw(stream, epoch)

    async def close(self) -> None:
        """Stop watching on this event loop, and forget its subscriptions."""
        await self._loops.close_current()

    async def _close_state(self, state: _LoopWatch) -> None:
        if state.task is not None:
            state.task.cancel()
            await asyncio.gather(state.task, return_exceptions=True)
            state.task = None

    # Checking ------------------------------------------------------------------------------------------------------

    async def _run(self, state: _LoopWatch) -> None:
        await repeat(self.interval, self.check, self._check_failed, self._check_back, lambda: bool(state.subscriptions))

    def _check_failed(self, exc: Exception) -> None:
        logger.warning("The streams watch could not read Redis (%s); it tries again every %gs", exc, self.interval)

    def _check_back(self) -> None:
        logger.warning("The streams watch reads Redis again")

    async def check(self) -> list[str]:
        """Check the streams this event loop's channels subscribe to, once: put the subscribers of each lost stream
        back in its group and tell them its position. Returns the lost streams."""
        state = self._loops.get()
        subscriptions = state.subscriptions
        now = now_ms()
        behind, state.behind = state.behind, set()
        readings = await self._read(subscriptions.streams(), now)
        self._catch_up(behind, readings)
        lost = [stream for stream, reading in readings.items() if subscriptions.lost(stream, reading, now)]
        if not lost:
            return lost
        layer = self._streams.redis_layer
        rejoining = {stream: subscriptions.channels(stream, now) for stream in lost}
        logger.warning(
            "Redis lost the history or this process's subscriptions of %d stream(s) (%s): a restart without "
            "persistence, a flush or a failover; %d subscription(s) restored and their subscribers told",
            len(lost),
            ", ".join(repr(stream) for stream in lost[:5]) + (", ..." if len(lost) > 5 else ""),
            sum(len(channels) for channels in rejoining.values()),
        )
        await asyncio.gather(
            *(layer.group_add(stream, channel) for stream, channels in rejoining.items() for channel in channels)
        )
        for stream, channels in rejoining.items():
            subscriptions.renewed(stream, channels, now)
        # A channel that unsubscribed while it was being added again leaves again, not to linger in the group.
        gone = [(stream, channel) for stream, channels in rejoining.items() for channel in channels]
        await asyncio.gather(
            *(
                layer.group_discard(stream, channel)
                for stream, channel in gone
                if not subscriptions.has(stream, channel)
            )
        )
        # Read after joining: whatever is published from here on reaches the subscribers live, or lies after this.
        positions = {stream: (epoch, offset) for stream, (epoch, offset, _) in (await self._read(lost, now)).items()}
        told = {stream: position for stream, position in positions.items() if position[0]}
        await asyncio.gather(
            *(layer.group_send(stream, stream_reset(stream, epoch, offset)) for stream, (epoch, offset) in told.items())
        )
        for stream, (epoch, _) in told.items():
            subscriptions.told(stream, epoch)
        return lost

    def _catch_up(self, behind: set[tuple[str, str]], readings: dict[str, Reading]) -> None:
        """Hand each channel that missed a message of a stream the stream's position (read after the miss), so it
        recovers what it missed; straight into its buffer here, where the miss happened. A channel still full is
        caught up at the next check."""
        layer = self._streams.redis_layer
        state = self._loops.get()
        for stream, channel in behind:
            if not state.subscriptions.has(stream, channel):
                continue  # unsubscribed (or gone) since: nothing to catch up, and no buffer to make for it
            epoch, offset, _ = readings.get(stream, ("", 0, 0))
            if epoch and not layer.deliver_here(channel, stream_reset(stream, epoch, offset)):
                state.behind.add((stream, channel))

    async def _read(self, streams: list[str], now: int) -> dict[str, Reading]:
        """The reading of each of ``streams``: one call per host (per slot on a cluster) and ``BATCH`` streams,
        issued together."""
        batches: dict[Hashable, tuple[Endpoint, list[str]]] = {}
        for stream in streams:
            endpoint = self._streams.endpoint_of(stream)
            where: Hashable = id(endpoint)
            if isinstance(endpoint, ClusterEndpoint):
                where = (where, slot_of(self._streams.keys.meta(stream)))
            batches.setdefault(where, (endpoint, []))[1].append(stream)
        calls = [
            (names[start : start + BATCH], endpoint)
            for endpoint, names in batches.values()
            for start in range(0, len(names), BATCH)
        ]
        replies = await asyncio.gather(*(self._call(endpoint, names, now) for names, endpoint in calls))
        readings: dict[str, Reading] = {}
        for (names, _), reply in zip(calls, replies, strict=True):
            for index, stream in enumerate(names):
                epoch, top, present = reply[3 * index : 3 * index + 3]
                readings[stream] = (as_text(epoch), int(top), int(present))
        return readings

    async def _call(self, endpoint: Endpoint, streams: list[str], now: int) -> Any:
        keys = []
        for stream in streams:
            keys.append(self._streams.keys.meta(stream))
            if self._client_id is not None:
                keys.append(self._streams.redis_layer.keys.group_members(stream, self._client_id))
        stride = 1 if self._client_id is None else 2
        return await endpoint.script(STREAM_WATCH, keys, [stride, now - self._lifetime_ms])
