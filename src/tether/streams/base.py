"""What every streams backend shares: the value types, the input checks, the recovery verdict and the public API.

A backend keeps, per stream, an **epoch** (a random id made when the stream has no history, so it changes whenever
history is lost), the **last offset** given out, and the kept messages by offset. It answers ``_publish`` (store the
message under the next offset and deliver it to the stream's group in the same step), ``_position`` (the epoch,
made when missing, and the last offset) and ``_history`` (the position and the kept messages after an offset, read at
one instant). Everything else is here, so the in-memory and Redis backends decide alike: the checks (made before
anything is stored, so bad input leaves nothing behind) and the verdict of a recovery.
"""

from __future__ import annotations

import json
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from tether.layers.base import BaseChannelLayer
from tether.streams.settings import StreamBounds, StreamPolicy, settings_policy
from tether.types import Message

__all__ = [
    "MESSAGE_TYPE",
    "RELOAD_EPOCH",
    "RELOAD_FUTURE",
    "RELOAD_TRIMMED",
    "RESET_TYPE",
    "Position",
    "Recovery",
    "StreamEntry",
    "Streams",
    "get_streams",
    "stream_message",
    "stream_reset",
]

logger = logging.getLogger("tether.streams")

#: The ``type`` of the message a subscribed channel receives (handled by a consumer's ``stream_message``).
MESSAGE_TYPE = "stream.message"
#: The ``type`` of the message a subscribed channel receives when Redis lost the stream's history or this process's
#: memberships and they were restored (handled by a consumer's ``stream_reset``; see ``watch.py``).
RESET_TYPE = "stream.reset"

#: Recovery verdicts: why the client must reload its state instead of applying recovered messages.
RELOAD_EPOCH = "epoch"
RELOAD_TRIMMED = "trimmed"
RELOAD_FUTURE = "future"

#: The longest epoch a client may present (ours are 12 characters; a longer one cannot match, and is not sent on).
MAX_EPOCH_LENGTH = 64


@dataclass(frozen=True)
class Position:
    """Where a stream is: its epoch and the offset of its last message (0: none sent in this epoch)."""

    epoch: str
    offset: int


@dataclass(frozen=True)
class StreamEntry:
    """One kept message: its offset and its data."""

    offset: int
    data: Any


@dataclass(frozen=True)
class Recovery:
    """The answer to ``recover()``.

    ``position``: the stream's position when it was read. ``entries``: every message after the offset asked for, up to
    ``position.offset``, in order and none missing; empty when ``reload`` is set. ``reload``: None when ``entries`` is
    complete, else why the client must reload its state and carry on from ``position``: ``"epoch"`` (the epoch given
    is not the stream's: its history was lost, or the epoch is another stream's), ``"trimmed"`` (messages after the
    offset are no longer all kept, or more are missing than ``limit``), ``"future"`` (the offset is past the last one).
    """

    position: Position
    entries: list[StreamEntry]
    reload: str | None

    @property
    def complete(self) -> bool:
        return self.reload is None


def stream_message(stream: str, epoch: str, offset: int, data: Any) -> Message:
    """The message a subscribed channel receives for one published message."""
    return {"type": MESSAGE_TYPE, "stream": stream, "epoch": epoch, "offset": offset, "data": data}


def stream_reset(stream: str, epoch: str, offset: int) -> Message:
    """The message a subscribed channel receives when its membership was restored: the stream's position, read
    after; a subscriber behind it recovers from its own position."""
    return {"type": RESET_TYPE, "stream": stream, "epoch": epoch, "offset": offset}


def require_offset(offset: Any) -> int:
    """``offset`` if it is an int of at least 0: ``TypeError`` for another type (bool included), ``ValueError`` when
    negative."""
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise TypeError(f"A stream offset must be an int, not {type(offset).__name__}: {offset!r:.40}.")
    if offset < 0:
        raise ValueError(f"A stream offset must be 0 or more, not {offset}.")
    return offset


def require_epoch(epoch: Any) -> str:
    if not isinstance(epoch, str):
        raise TypeError(f"A stream epoch must be a str (as position() gave it), not {type(epoch).__name__}.")
    return epoch


def encode_data(data: Any) -> str:
    """``data`` as compact JSON; ``TypeError`` naming why when it is not JSON-serialisable (clients get it as JSON)."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Stream data must be JSON-serialisable (str keys; str, numbers, bools, None, lists and dicts): {exc}."
        ) from None


def verdict(asked: Position, position: Position, entries: list[StreamEntry] | None, limit: int) -> str | None:
    """Why a recovery from ``asked`` must be a reload, given the stream's ``position`` and the ``entries`` read after
    ``asked.offset`` at that same instant (None: an entry was unreadable); None when ``entries`` is complete."""
    if asked.epoch != position.epoch:
        return RELOAD_EPOCH
    if asked.offset > position.offset:
        return RELOAD_FUTURE
    missing = position.offset - asked.offset
    if missing > limit or entries is None or len(entries) != missing:
        return RELOAD_TRIMMED
    # Complete means every offset from asked + 1 to the top, in order: anything else (an entry deleted by hand, a
    # garbled id) is history that cannot be trusted.
    if any(entry.offset != asked.offset + 1 + index for index, entry in enumerate(entries)):
        return RELOAD_TRIMMED
    return None


class Streams:
    """The streams of one channel layer. Get it with ``get_streams(layer)``, not by building one.

    A stream is a group whose messages are kept: ``publish`` gives a message the stream's next offset, keeps it (within
    the bounds ``TETHER_STREAMS`` sets for the stream's name) and sends it to the channels subscribed to the stream, as
    the message ``{"type": "stream.message", "stream", "epoch", "offset", "data"}``. A client that was away asks
    ``recover`` for what it missed after the last offset it saw.

    To miss nothing, a subscriber must **subscribe first, then recover, then drop live messages whose offset is at
    most the last one it applied** (a message published between the subscribe and the recover arrives live and is in
    the recovery too), and **recover again on a gap** (a live offset more than one past the last applied): live
    delivery skips a member whose buffer is full, as ``group_send`` does, and on sharded Redis or a cluster two
    publishers' messages may reach a process in the other order.

    Stream names follow the group name rules (``TypeError`` otherwise); the stream is also the layer group its
    subscribers are in, so a plain ``group_send`` to that name reaches them too, but is not kept and has no offset.
    """

    def __init__(self, layer: BaseChannelLayer, policy: StreamPolicy) -> None:
        self.layer = layer
        self.policy = policy
        #: Messages this process published, and recoveries it answered by outcome (``complete`` or the reload
        #: reason), since it started (``stats()``).
        self.published = 0
        self.recoveries: dict[str, int] = {}

    def stats(self) -> dict[str, Any]:
        """What this process did with streams, for metrics (``tether.metrics``): ``published`` and ``recoveries``
        (outcome -> count; the outcomes are ``complete`` and the ``RELOAD_*`` reasons)."""
        return {"published": self.published, "recoveries": dict(self.recoveries)}

    def _recovered(self, recovery: Recovery) -> Recovery:
        outcome = recovery.reload or "complete"
        self.recoveries[outcome] = self.recoveries.get(outcome, 0) + 1
        return recovery

    # The API -------------------------------------------------------------------------------------------------------

    async def publish(self, stream: str, data: Any) -> Position:
        """Keep ``data`` (any JSON-serialisable value; what is kept and sent is its JSON round trip) as the stream's
        next message and send it to the subscribers; returns its position. ``TypeError`` for a bad name or data that
        is not JSON-serialisable (nothing is kept)."""
        self.layer.require_valid_group_name(stream)
        text = encode_data(data)
        # What is sent and kept is the JSON round trip (tuples become lists, int keys str), so a live message and a
        # recovered one are equal, and equal to what a browser gets.
        position = await self._publish(stream, json.loads(text), text, self.policy.bounds_for(stream))
        self.published += 1
        return position

    async def subscribe(self, stream: str, channel: str) -> None:
        """Send ``stream``'s messages to ``channel`` from now on (it joins the stream's group)."""
        self.layer.require_valid_group_name(stream)
        await self.layer.group_add(stream, channel)

    async def unsubscribe(self, stream: str, channel: str) -> None:
        """Stop sending ``stream``'s messages to ``channel``."""
        self.layer.require_valid_group_name(stream)
        await self.layer.group_discard(stream, channel)

    async def position(self, stream: str) -> Position:
        """The stream's epoch and last offset (0 when nothing was published in this epoch); a stream without history
        gets its epoch now."""
        self.layer.require_valid_group_name(stream)
        return await self._position(stream, self.policy.bounds_for(stream))

    async def recover(self, stream: str, epoch: str, offset: int, limit: int | None = None) -> Recovery:
        """Every kept message of ``stream`` after ``offset`` in ``epoch``, in order, or the reason to reload (see
        ``Recovery``). With ``limit``, more than ``limit`` missed messages is a ``"trimmed"`` reload: a recovery is
        never cut short and presented as complete.

        ``TypeError`` for a bad name, an epoch that is not a str or an offset that is not an int; ``ValueError`` for
        a negative offset or a limit below 1.
        """
        self.layer.require_valid_group_name(stream)
        require_epoch(epoch)
        require_offset(offset)
        bounds = self.policy.bounds_for(stream)
        most = bounds.max_length
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ValueError(f"recover() limit must be None or an int of at least 1, not {limit!r}.")
            most = min(limit, most)
        asked = Position(epoch, offset)
        if len(epoch) > MAX_EPOCH_LENGTH:  # cannot be one of ours: no need to carry it to the backend
            position = await self._position(stream, bounds)
            return self._recovered(Recovery(position, [], RELOAD_EPOCH))
        position, entries = await self._history(stream, asked, most, bounds)
        reason = verdict(asked, position, entries, most)
        if reason is not None or entries is None:
            return self._recovered(Recovery(position, [], reason or RELOAD_TRIMMED))
        return self._recovered(Recovery(position, entries, None))

    async def close(self) -> None:
        """Release what the backend holds for this event loop (nothing for the in-memory one)."""

    # For backends --------------------------------------------------------------------------------------------------

    async def _publish(self, stream: str, data: Any, text: str, bounds: StreamBounds) -> Position:
        """Keep the message (``data``, already checked; ``text`` is its JSON) and deliver it to the stream's group."""
        raise NotImplementedError

    async def _position(self, stream: str, bounds: StreamBounds) -> Position:
        raise NotImplementedError

    async def _history(
        self, stream: str, asked: Position, most: int, bounds: StreamBounds
    ) -> tuple[Position, list[StreamEntry] | None]:
        """The stream's position and, when ``asked`` is in its epoch and at most ``most`` messages behind, the kept
        entries after ``asked.offset`` (all read at one instant; None when one could not be read, logged); otherwise
        any list (the verdict does not look at it)."""
        raise NotImplementedError


_registry: weakref.WeakKeyDictionary[BaseChannelLayer, Streams] = weakref.WeakKeyDictionary()


def existing_streams(layer: BaseChannelLayer) -> Streams | None:
    """The streams of ``layer`` if they were made, without making them (for metrics)."""
    return _registry.get(layer)


def get_streams(layer: BaseChannelLayer | None = None, *, config: dict[str, Any] | None = None) -> Streams:
    """The streams of ``layer`` (by default the ``default`` channel layer), made on first use with ``config`` (the
    shape of ``TETHER_STREAMS``) or else the ``TETHER_STREAMS`` setting; later calls return the same object
    (``ValueError`` if they pass a ``config``).

    Raises ``TypeError`` for a layer without a streams backend (the in-memory and the two Redis layers have one).
    """
    from tether.layers.manager import layer_or_default

    layer = layer_or_default(layer, "Streams")
    streams = _registry.get(layer)
    if streams is not None:
        if config is not None:
            raise ValueError(
                "The streams of this layer exist already; get_streams() takes a config on the first call only (or "
                "set TETHER_STREAMS)."
            )
        return streams
    policy = StreamPolicy(config) if config is not None else settings_policy()
    from tether.layers.inmemory import InMemoryChannelLayer

    if isinstance(layer, InMemoryChannelLayer):
        from tether.streams.memory import MemoryStreams

        streams = MemoryStreams(layer, policy)
    elif type(layer).__module__.startswith("tether.layers.redis"):  # without importing redis-py for other layers
        from tether.streams.redis import redis_streams

        streams = redis_streams(layer, policy)
    else:
        raise TypeError(
            f"{type(layer).__name__} has no streams backend; use InMemoryChannelLayer, RedisChannelLayer or "
            "RedisPubSubChannelLayer."
        )
    _registry[layer] = streams
    return streams
