"""Streams: groups whose messages are kept, with offsets and epochs, so a client that was away recovers what it missed.

``get_streams(layer)`` gives the streams of a channel layer (one per layer instance). ``publish`` gives a message the
stream's next offset (1, 2, 3... per stream, across processes), keeps it within the stream's bounds (``TETHER_STREAMS``:
``max_length`` messages, ``max_age`` seconds) and sends it to the subscribed channels as ``{"type": "stream.message",
"stream", "epoch", "offset", "data"}``. ``recover(stream, epoch, offset)`` returns every kept message after the offset,
in order, or the verdict that the client must reload (``Recovery.reload``: ``"epoch"``, ``"trimmed"``, ``"future"``).
The epoch changes whenever history is lost, so an offset is never compared across histories. On the Redis layers a
watch puts subscriptions that Redis lost (a restart without persistence) back, and sends their channels
``{"type": "stream.reset", "stream", "epoch", "offset"}``: a subscriber behind that position recovers from its own.

The in-memory layer keeps a ring buffer per stream in the process; the Redis layers keep a Redis stream per stream and
publish in one call (docs/streams.md gives the guarantees, the layout and the cost).
"""

from __future__ import annotations

from tether.streams.base import (
    MESSAGE_TYPE,
    RELOAD_EPOCH,
    RELOAD_FUTURE,
    RELOAD_TRIMMED,
    RESET_TYPE,
    Position,
    Recovery,
    StreamEntry,
    Streams,
    get_streams,
)
from tether.streams.settings import DEFAULT_MAX_AGE, DEFAULT_MAX_LENGTH, StreamBounds

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_LENGTH",
    "MESSAGE_TYPE",
    "RELOAD_EPOCH",
    "RELOAD_FUTURE",
    "RELOAD_TRIMMED",
    "RESET_TYPE",
    "Position",
    "Recovery",
    "StreamBounds",
    "StreamEntry",
    "Streams",
    "get_streams",
]
