"""Streams for the in-memory layer: a ring buffer per stream, in this process, as the layer's groups are.

Each stream keeps its epoch, last offset and the last ``max_length`` messages (as JSON text, so each recovery hands
out its own copies); messages older than ``max_age`` are dropped when the stream is next written, and a stream
untouched for ``max_age`` is forgotten whole, like a Redis key expiring, so it starts again under a new epoch.
``layer.flush()`` forgets every stream (the layer's ``generation`` tells).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from itertools import islice
from typing import Any

from tether.layers.inmemory import InMemoryChannelLayer
from tether.streams.base import Position, StreamEntry, Streams, stream_message
from tether.streams.settings import StreamBounds, StreamPolicy

__all__ = ["MemoryStreams", "new_epoch"]

#: Seconds between two sweeps of streams untouched for their max_age.
_SWEEP_EVERY = 60.0


def new_epoch() -> str:
    """A fresh epoch: 12 URL-safe characters (72 random bits)."""
    return secrets.token_urlsafe(9)


class _Ring:
    """One stream's history: epoch, last offset, and ``(offset, kept at, JSON)`` of the kept messages, oldest first."""

    __slots__ = ("entries", "epoch", "top", "touched")

    def __init__(self, max_length: int, now: float) -> None:
        self.epoch = new_epoch()
        self.top = 0
        self.entries: deque[tuple[int, float, str]] = deque(maxlen=max_length)
        self.touched = now


class MemoryStreams(Streams):
    """``Streams`` kept in this process, for ``InMemoryChannelLayer``."""

    def __init__(self, layer: InMemoryChannelLayer, policy: StreamPolicy) -> None:
        super().__init__(layer, policy)
        self._layer = layer
        self._rings: dict[str, _Ring] = {}
        self._generation = layer.generation
        self._next_sweep = time.monotonic() + _SWEEP_EVERY

    def _ring(self, stream: str, bounds: StreamBounds, now: float) -> _Ring:
        """The stream's ring, made new when it has none, was flushed, or was silent for ``max_age``."""
        if self._generation != self._layer.generation:
            self._rings.clear()
            self._generation = self._layer.generation
        if now >= self._next_sweep:
            self._sweep(now)
        ring = self._rings.get(stream)
        if ring is None or now - ring.touched > bounds.max_age:
            ring = self._rings[stream] = _Ring(bounds.max_length, now)
        return ring

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + _SWEEP_EVERY
        for stream, ring in list(self._rings.items()):
            if now - ring.touched > self.policy.bounds_for(stream).max_age:
                del self._rings[stream]

    async def _publish(self, stream: str, data: Any, text: str, bounds: StreamBounds) -> Position:
        now = time.monotonic()
        ring = self._ring(stream, bounds, now)
        ring.top += 1
        ring.touched = now
        entries = ring.entries
        entries.append((ring.top, now, text))
        cutoff = now - bounds.max_age
        while entries[0][1] < cutoff:
            entries.popleft()
        position = Position(ring.epoch, ring.top)
        await self._layer.group_send(stream, stream_message(stream, ring.epoch, ring.top, data))
        return position

    async def _position(self, stream: str, bounds: StreamBounds) -> Position:
        ring = self._ring(stream, bounds, time.monotonic())
        return Position(ring.epoch, ring.top)

    async def _history(
        self, stream: str, asked: Position, most: int, bounds: StreamBounds
    ) -> tuple[Position, list[StreamEntry] | None]:
        ring = self._ring(stream, bounds, time.monotonic())
        position = Position(ring.epoch, ring.top)
        if asked.epoch != ring.epoch or not 0 < ring.top - asked.offset <= most:
            return position, []
        # Offsets in the ring are consecutive, so the first wanted entry's index follows from the oldest one's.
        first = ring.entries[0][0] if ring.entries else ring.top + 1
        start = asked.offset + 1 - first
        if start < 0:
            return position, []  # trimmed: the verdict sees the entries missing
        kept = islice(ring.entries, start, None)
        return position, [StreamEntry(offset, json.loads(text)) for offset, _, text in kept]
