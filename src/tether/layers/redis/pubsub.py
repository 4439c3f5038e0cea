"""``RedisPubSubChannelLayer``: the lower-latency Redis layer, on pub/sub instead of lists.

Messages are published and pushed straight to subscribed processes: no list to poll, no key to expire. The price is
that Redis keeps nothing: a message for a process that is not subscribed at that moment is gone. What this layer
does so that nothing is lost *silently*:

* ``send`` to a process-local channel whose process is not listening (``PUBLISH`` reached nobody) is counted in
  ``stats()["undeliverable"]`` and logged once per channel;
* ``send`` to a named channel nobody is subscribed to keeps the message in the sending process (``parked``, at most
  ``capacity`` of them), for a ``receive`` there, or to go out ahead of the next message sent once a receiver has
  subscribed elsewhere; after ``expiry`` it expires, counted and logged. That is also what makes "send, then receive"
  work in one process;
* a group message is delivered by each subscribed process to its local members; a member whose buffer is full is
  skipped and counted (``group_full_drops``);
* ``group_send``/``send`` while Redis is unreachable raise ``LayerUnavailable`` after ``unavailable_timeout``;
* a subscriber that loses Redis reconnects with backoff, resubscribes, counts ``reconnects`` and logs the gap.

Group membership lives in the process that called ``group_add`` (a group topic per group, one subscription per
process), so ``group_send`` costs Redis one ``PUBLISH`` whatever the number of members. Adding another process's
channel to a group is refused with an error; use ``RedisChannelLayer`` for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

from tether.exceptions import ChannelFull
from tether.layers.redis.base import LoopState, RedisLayerBase
from tether.layers.redis.cluster import ClusterEndpoint
from tether.layers.redis.codec import TO_CHANNEL, TO_GROUP
from tether.layers.redis.endpoints import NodeEndpoint
from tether.layers.redis.failures import Outage
from tether.layers.redis.storage import Script, client_id_of, now_ms, pack_frame
from tether.layers.redis.subscriber import ClusterSubscriber, Subscriber
from tether.types import Message

__all__ = ["RedisPubSubChannelLayer"]

#: What a pub/sub topic carries: a group's messages, this process's own channels, or one named channel.
_TopicKind = Literal["group", "process", "channel"]


class RedisPubSubChannelLayer(RedisLayerBase["PubSubLoopState"]):
    """A channel layer on Redis pub/sub: lower latency, no capacity or persistence in Redis.

    Same options as ``RedisChannelLayer`` except ``inbox_capacity``; on Redis Cluster it uses sharded pub/sub
    (``SPUBLISH``/``SSUBSCRIBE``, Redis 7+), each topic on the master of its slot. ``capacity`` bounds what each process
    buffers per channel. Named channels are broadcast to every process receiving on them (pub/sub has no shared queue):
    run one worker per named channel, or use ``RedisChannelLayer`` for work queues. Durable channels (the ``durable``
    option) are the exception: Redis streams read through a consumer group, as on ``RedisChannelLayer``, so each message
    goes to one receiver and is kept until it is acknowledged.

    ``stats()`` counts what ``RedisChannelLayer`` counts, plus ``undeliverable``: messages for a process-local channel
    whose process was not subscribed; ``parked``: messages for a named channel nobody was subscribed to, kept in the
    sending process; and ``parked_published``: those of them published later, when a receiver had appeared.
    """

    counters: ClassVar[tuple[str, ...]] = (*RedisLayerBase.counters, "undeliverable", "parked", "parked_published")

    def __init__(self, hosts: Any = None, **options: Any) -> None:
        super().__init__(hosts, **options)
        self._groups: dict[str, dict[str, int]] = {}  # group -> {local member: joined at, ms}
        self._topics: dict[str, tuple[_TopicKind, str]] = {}  # pub/sub topic -> (kind, name)

    # Channels ------------------------------------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Publish ``message`` for ``channel``. ``ChannelFull`` when this process's own channel already holds
        ``capacity`` messages, or when nobody receives on a named channel and this process already keeps
        ``capacity`` messages for it; ``LayerUnavailable`` when Redis stays unreachable."""
        self.require_valid_channel_name(channel)
        payload = self.codec.encode(message, TO_CHANNEL, channel)
        state = self._loops.get()
        client_id = client_id_of(channel)
        if client_id == self.client_id and self._local.queued(channel) >= self.get_capacity(channel):
            raise ChannelFull(f"Channel {channel!r} holds {self.get_capacity(channel)} messages already.")
        expires_at = now_ms() + self._expiry_ms
        if client_id is None and self.is_durable(channel):  # a stream, as on RedisChannelLayer
            await self._streams.send(state, channel, pack_frame(expires_at, payload))
        elif client_id is None:
            await self._send_named(state, channel, payload, expires_at)
        else:
            frame = pack_frame(expires_at, payload, "", channel)
            endpoint = self._endpoint(state, client_id)
            if not await endpoint.call(endpoint.publish_command, self.keys.inbox(client_id), frame):
                if client_id == self.client_id:  # not subscribed yet: the receive that subscribes finds it here
                    self._park(channel, payload, expires_at)
                else:
                    self._stats.drop(
                        "undeliverable",
                        channel,
                        "A message for channel %r was dropped: its process is not subscribed (gone, or reconnecting)",
                        channel,
                    )
        self._stats.incr("sent")

    async def _send_named(self, state: PubSubLoopState, channel: str, payload: bytes, expires_at: int) -> None:
        """Publish to a named channel's receivers wherever they are; with none, keep the message here.

        Messages kept here (``parked``) wait for a ``receive`` in this process, or go out ahead of the next message
        that finds a receiver elsewhere, so that they keep their order; they expire, counted, after ``expiry``. Only
        a channel that nobody receives on can be full.
        """
        topic = self.keys.channel(channel)
        endpoint = self._endpoint(state, channel)
        parked = self._local.take_all(channel) if topic not in self._topics and self._local.queued(channel) else []
        if parked:  # (expired ones were dropped, counted, by take_all)
            frames = [pack_frame(int(at), self.codec.encode(message, TO_CHANNEL, channel)) for at, message in parked]
            if not await endpoint.call(endpoint.publish_command, topic, frames[0]):
                for at, message in parked:  # still nobody: they stay, in order
                    self._local.deliver(channel, message, at)
                self._park(channel, payload, expires_at)
                return
            for frame in frames[1:]:
                await endpoint.call(endpoint.publish_command, topic, frame)
            self._stats.incr("parked_published", len(frames))
        if not await endpoint.call(endpoint.publish_command, topic, pack_frame(expires_at, payload)):
            self._park(channel, payload, expires_at)

    def _park(self, channel: str, payload: bytes, expires_at: int) -> None:
        """Keep a message nobody was subscribed for, in this process; ``ChannelFull`` when it keeps ``capacity``."""
        if not self._local.deliver(channel, self.codec.decode(payload, TO_CHANNEL, channel), expires_at):
            raise ChannelFull(
                f"Nobody receives on channel {channel!r}, and this process already keeps {self.get_capacity(channel)} "
                "of its messages for a receiver (capacity); they go out when one appears, or expire after expiry."
            )
        self._stats.incr("parked")

    def _new_loop_state(self) -> PubSubLoopState:
        return PubSubLoopState(len(self.hosts))

    async def _stop_receiving(self, state: PubSubLoopState) -> None:
        await self._stop_loops(state, [])  # the durable channels' readers
        for subscriber in list(state.subscribers.values()):
            await subscriber.aclose()
        state.subscribers.clear()

    async def _listen_for_named(self, state: PubSubLoopState, channel: str) -> None:
        settings = self._durable.settings_for(channel) if self._durable else None
        if settings is not None:
            self._streams.listen(state, channel, settings)
        else:
            await self._subscribe(state, "channel", channel)

    async def _listen_for_own_channels(self, state: PubSubLoopState) -> None:
        await self._subscribe(state, "process", self.client_id)

    # Groups --------------------------------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` (a named channel, or one this process made) to ``group``; this process delivers the
        group's messages to it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._require_not_durable(group, channel)
        client_id = client_id_of(channel)
        if client_id is not None and client_id != self.client_id:
            raise ValueError(
                f"RedisPubSubChannelLayer cannot add {channel!r} to group {group!r}: that channel belongs to another "
                "process, and on pub/sub each process serves its own group members. Call group_add in the process "
                "that made the channel, or use RedisChannelLayer."
            )
        self._groups.setdefault(group, {})[channel] = now_ms()
        await self._subscribe(self._loops.get(), "group", group)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is None or members.pop(channel, None) is None or members:
            return
        del self._groups[group]
        await self._unsubscribe(self._loops.get(), "group", group)

    async def group_send(self, group: str, message: Message) -> None:
        """Publish ``message`` once to the group's topic; every process holding members delivers it to them."""
        self.require_valid_group_name(group)
        payload = self.codec.encode(message, TO_GROUP, group)
        frame = pack_frame(now_ms() + self._expiry_ms, payload, group)
        endpoint = self._endpoint(self._loops.get(), group)
        await endpoint.call(endpoint.publish_command, self.keys.group(group), frame)
        self._stats.incr("group_sent")

    async def publish_to_group_with(self, group: str, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """``group_send`` of a message that a script writes beside the group and completes (``tether.streams``
        keeps its history so, in one call). ``script`` runs on the group's host with ``keys`` and ARGV: the publish
        command, the group's topic, the frame head (up to the payload), then ``args``; it publishes the frame it
        completes. Returns its reply."""
        frame = pack_frame(now_ms() + self._expiry_ms, b"", group)
        endpoint = self._endpoint(self._loops.get(), group)
        reply = await endpoint.script(
            script, list(keys), [endpoint.publish_command, self.keys.group(group), frame, *args]
        )
        self._stats.incr("group_sent")
        return reply

    # Housekeeping --------------------------------------------------------------------------------------------------

    def group_sizes(self) -> dict[str, int]:
        """How many of this process's channels each group has (members in other processes are not known here
        without asking Redis); read by ``tether.status`` once a snapshot, not per message."""
        return {group: len(members) for group, members in self._groups.items()}

    async def flush(self) -> None:
        """Drop this process's groups and buffered messages, and delete the history of streams under this layer's
        ``prefix`` (pub/sub stores nothing else in Redis)."""
        state = self._loops.get()
        for group in list(self._groups):
            await self._unsubscribe(state, "group", group)
        self._groups.clear()
        self._forget_local()
        # Pub/sub keeps no messages in Redis, but streams keep their history there (tether.streams).
        for index in range(len(self.hosts)):
            await self._endpoint_at(state, index).delete_matching(self.keys.history_pattern)

    # Subscriptions -------------------------------------------------------------------------------------------------

    def _topic(self, kind: _TopicKind, name: str) -> str:
        if kind == "group":
            return self.keys.group(name)
        if kind == "process":
            return self.keys.inbox(name)
        return self.keys.channel(name)

    def _subscriber(self, state: PubSubLoopState, name: str) -> Subscriber | ClusterSubscriber:
        index = self._ring.index_for(name)
        subscriber = state.subscribers.get(index)
        if subscriber is not None:
            return subscriber
        endpoint = self._endpoint_at(state, index)
        what = f"pub/sub topics of process {self.client_id!r}"
        if isinstance(endpoint, ClusterEndpoint):
            subscriber = ClusterSubscriber(
                endpoint,
                self._on_message,
                lambda: Outage(self._stats, what),
                confirm_timeout=float(self.unavailable_timeout),
                idle_timeout=self._settings.block_timeout,
            )
        else:
            node = cast(NodeEndpoint, endpoint)
            subscriber = Subscriber(
                lambda: node.make_connection(blocking=True),
                node.where,
                self._on_message,
                Outage(self._stats, what),
                confirm_timeout=float(self.unavailable_timeout),
                idle_timeout=self._settings.block_timeout,
            )
        state.subscribers[index] = subscriber
        return subscriber

    async def _subscribe(self, state: PubSubLoopState, kind: _TopicKind, name: str) -> None:
        topic = self._topic(kind, name)
        self._topics[topic] = (kind, name)
        await self._subscriber(state, name).subscribe(topic)

    async def _unsubscribe(self, state: PubSubLoopState, kind: _TopicKind, name: str) -> None:
        topic = self._topic(kind, name)
        self._topics.pop(topic, None)
        subscriber = state.subscribers.get(self._ring.index_for(name))
        if subscriber is not None:
            await subscriber.unsubscribe(topic)

    def _on_message(self, topic: str, data: bytes) -> None:
        route = self._topics.get(topic)
        if route is None:
            return  # unsubscribed while the message was on its way: nobody here wants it any more
        kind, name = route
        if kind == "group":
            self._route(data, None, self._group_members(name), name)
        elif kind == "process":
            self._route(data, None)
        else:
            self._route(data, name)

    def _group_members(self, group: str) -> list[str]:
        """This process's members of ``group``, without those older than ``group_expiry`` (counted)."""
        members = self._groups.get(group)
        if not members:
            return []
        cutoff = now_ms() - self._group_expiry_ms
        expired = [channel for channel, joined_at in members.items() if joined_at < cutoff]
        for channel in expired:
            del members[channel]
        if expired:
            self._stats.incr("group_members_expired", len(expired))
        return list(members)


class PubSubLoopState(LoopState):
    """``RedisPubSubChannelLayer`` on one event loop: one subscriber connection per host (by its index)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.subscribers: dict[int, Subscriber | ClusterSubscriber] = {}
