"""Streams for the Redis layers: history in Redis streams, each publish one script call that also delivers.

The keys, bytes and scripts are in ``storage.py`` (its docstring is the model); this module runs them through the
layer's own connections, so a stream's keys live on the host (or cluster slot) of its group, and the delivery is the
layer's: ``RedisChannelLayer.send_to_group_with`` (the ``group_send`` fan-out, one frame per process) or
``RedisPubSubChannelLayer.publish_to_group_with`` (one publish to the group's topic).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import msgpack

from tether.exceptions import MessageTooLarge
from tether.layers.redis.base import RedisLayerBase
from tether.layers.redis.core import RedisChannelLayer
from tether.layers.redis.pubsub import RedisPubSubChannelLayer
from tether.layers.redis.storage import now_ms
from tether.streams.base import Position, StreamEntry, Streams
from tether.streams.memory import new_epoch
from tether.streams.settings import StreamBounds, StreamPolicy
from tether.streams.storage import (
    STREAM_MEMBERS,
    STREAM_POSITION,
    STREAM_PUBLISH,
    STREAM_SEND,
    StreamKeys,
    message_head,
    message_tail,
    parse_entry,
)

__all__ = ["RedisStreams", "redis_streams"]

logger = logging.getLogger("tether.streams")

#: Offsets from here on cannot be stream ids (Redis ids are 64-bit, and the scripts' Lua numbers exact to 2**53).
_LAST_ID = 2**53

#: Bytes a message's tail (epoch and offset) adds at most to its head and data.
_TAIL_SIZE = 40


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


class RedisStreams(Streams):
    """``Streams`` for ``RedisChannelLayer`` (one Redis, sharded ``hosts``, or a cluster) and
    ``RedisPubSubChannelLayer`` (see ``storage.py`` for the model)."""

    def __init__(self, layer: RedisLayerBase[Any], policy: StreamPolicy) -> None:
        super().__init__(layer, policy)
        self._layer = layer
        self.keys = StreamKeys(layer.prefix)
        self._heads: dict[str, bytes] = {}

    def _head(self, stream: str) -> bytes:
        head = self._heads.get(stream)
        if head is None:
            if len(self._heads) > 10_000:
                self._heads.clear()
            head = self._heads[stream] = message_head(stream)
        return head

    async def _publish(self, stream: str, data: Any, text: str, bounds: StreamBounds) -> Position:
        layer = self._layer
        head = self._head(stream)
        packed: bytes = msgpack.packb(data, use_bin_type=True)
        limit = layer.codec.max_message_size
        if limit is not None and len(head) + len(packed) + _TAIL_SIZE > limit:
            raise MessageTooLarge(
                f"A message of stream {stream!r} is {len(head) + len(packed)} bytes encoded; this layer accepts at "
                f"most {limit} (max_message_size). Publish a reference to the data instead, or raise max_message_size."
            )
        keys = [self.keys.meta(stream)]
        append = [new_epoch(), packed, now_ms(), bounds.max_length, bounds.max_age_ms]
        if isinstance(layer, RedisPubSubChannelLayer):
            epoch, offset = await layer.publish_to_group_with(stream, STREAM_PUBLISH, keys, [head, *append])
        else:
            layer = cast(RedisChannelLayer, layer)  # redis_streams() makes this class for the two layers only
            epoch, offset = await layer.send_to_group_with(
                stream,
                head,
                STREAM_SEND,
                STREAM_MEMBERS,
                keys,
                append,
                lambda reply: packed + message_tail(_text(reply[0]), int(reply[1])),
            )
        return Position(_text(epoch), int(offset))

    async def _position(self, stream: str, bounds: StreamBounds) -> Position:
        endpoint = self._layer._endpoint(self._layer._loops.get(), stream)
        epoch, top = await endpoint.script(STREAM_POSITION, [self.keys.meta(stream)], [new_epoch(), bounds.max_age_ms])
        return Position(_text(epoch), int(top))

    async def _history(
        self, stream: str, asked: Position, most: int, bounds: StreamBounds
    ) -> tuple[Position, list[StreamEntry] | None]:
        if asked.offset >= _LAST_ID:  # past any offset Redis can hold: "future" (or "epoch"), nothing to read
            return await self._position(stream, bounds), []
        endpoint = self._layer._endpoint(self._layer._loops.get(), stream)
        # Issued together (on an idle link the XRANGE follows the script's reply); storage.py says why reading them
        # apart is safe.
        position, raw = await asyncio.gather(
            self._position(stream, bounds),
            endpoint.call(
                "XRANGE", self.keys.history(stream, asked.epoch), f"{asked.offset + 1}-0", "+", "COUNT", most
            ),
        )
        entries = []
        for entry in raw:
            try:
                offset, data = parse_entry(entry)
            except ValueError as exc:
                logger.warning("Stream %r holds an unreadable entry, so it cannot be recovered from: %s", stream, exc)
                return position, None
            if offset > position.offset:
                break  # published after the position was read: it reaches a subscriber live
            entries.append(StreamEntry(offset, data))
        return position, entries


def redis_streams(layer: Any, policy: StreamPolicy) -> Streams:
    """The streams of a Redis layer; ``TypeError`` for one they cannot run on."""
    if not isinstance(layer, (RedisChannelLayer, RedisPubSubChannelLayer)):
        raise TypeError(f"{type(layer).__name__} has no streams backend.")
    if layer.codec.encrypted:
        raise TypeError(
            "Streams do not run on a layer with symmetric_encryption_keys yet: their history would be kept "
            "unencrypted in Redis. Use a layer without encryption for streams (a second CHANNEL_LAYERS alias)."
        )
    return RedisStreams(layer, policy)
