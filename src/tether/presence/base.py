"""What every presence backend shares: the member model, input checks, event batching and the public API.

A backend stores *records*: for each (group, channel) one user id, one metadata dict and the join time. It answers
``_store_join`` (was the channel new in the group?), ``_store_leave`` (the record removed, if any) and
``_store_list`` (every live record of a group). Everything else is here, so the in-memory and Redis backends behave
the same: the name and metadata checks (made before anything is stored, so bad input leaves nothing behind), the
grouping by user, and the events, which go through the layer's own ``group_send`` to the group ``events_group(g)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from tether.layers.base import MAX_NAME_LENGTH, BaseChannelLayer

__all__ = [
    "DEFAULT_BATCH_WINDOW",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_METADATA_SIZE",
    "DEFAULT_TTL",
    "MAX_EVENT_MEMBERS",
    "Connection",
    "Member",
    "Presence",
    "PresenceCount",
    "Record",
    "check_options",
    "check_settings",
    "events_group",
    "get_presence",
]

logger = logging.getLogger("tether.presence")

#: Seconds after its last heartbeat that a process's members are dropped from every list (Redis layers).
DEFAULT_TTL = 20.0
#: Seconds between two heartbeats of a process (Redis layers); also how often it looks for dead processes to reap.
DEFAULT_HEARTBEAT = 5.0
#: Seconds joins and leaves are gathered before one event per group announces them all.
DEFAULT_BATCH_WINDOW = 0.05
#: The largest metadata of one connection, in bytes of JSON.
DEFAULT_MAX_METADATA_SIZE = 4096
#: The most members one event lists; a larger batch goes out as several events (each under the layer's message size).
MAX_EVENT_MEMBERS = 500
#: The longest user id, in characters.
MAX_USER_LENGTH = 200

_EVENTS_PREFIX = "presence."


def events_group(group: str) -> str:
    """The layer group whose members hear ``group``'s ``presence.join`` and ``presence.leave`` events."""
    return _EVENTS_PREFIX + group


@dataclass(frozen=True)
class Connection:
    """One channel present in a group: its metadata and when it joined (epoch seconds)."""

    channel: str
    meta: dict[str, Any]
    joined_at: float


@dataclass(frozen=True)
class Member:
    """One user present in a group, with each of their connections (oldest first)."""

    user: str
    connections: tuple[Connection, ...]

    @property
    def meta(self) -> dict[str, Any]:
        """The metadata of the user's most recent connection (what a list of names shows)."""
        return self.connections[-1].meta


class PresenceCount(NamedTuple):
    """How many users are present, and how many connections they have between them."""

    users: int
    connections: int


@dataclass(frozen=True)
class Record:
    """What a backend stores per (group, channel): the user (the channel itself when anonymous), metadata, join time
    in epoch milliseconds."""

    channel: str
    user: str
    meta: dict[str, Any]
    joined_ms: int

    def event_entry(self) -> dict[str, Any]:
        """How an event lists this connection."""
        return {"channel": self.channel, "user": self.user, "meta": self.meta}


def group_records(records: list[Record]) -> list[Member]:
    """Records grouped by user: users in the order they first joined, each one's connections oldest first."""
    by_user: dict[str, list[Record]] = {}
    for record in sorted(records, key=lambda record: (record.joined_ms, record.channel)):
        by_user.setdefault(record.user, []).append(record)
    return [
        Member(user, tuple(Connection(r.channel, r.meta, r.joined_ms / 1000) for r in connections))
        for user, connections in by_user.items()
    ]


def require_number(name: str, value: Any, *, at_most: float | None = None) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Presence option {name} must be a positive number of seconds, not {value!r}.")
    if at_most is not None and value > at_most:
        raise ValueError(f"Presence option {name} is {value!r}; it must be at most {at_most:g}.")
    return float(value)


def check_options(
    ttl: Any = DEFAULT_TTL,
    heartbeat: Any = DEFAULT_HEARTBEAT,
    batch_window: Any = DEFAULT_BATCH_WINDOW,
    max_metadata_size: Any = DEFAULT_MAX_METADATA_SIZE,
) -> None:
    """``ValueError`` naming the first presence option that is not usable (``TETHER_PRESENCE``'s keys)."""
    require_number("ttl", ttl)
    require_number("heartbeat", heartbeat, at_most=float(ttl) / 2)
    require_number("batch_window", batch_window, at_most=5)
    if not isinstance(max_metadata_size, int) or isinstance(max_metadata_size, bool) or max_metadata_size < 2:
        raise ValueError(f"Presence option max_metadata_size must be an int of bytes, not {max_metadata_size!r}.")


class _Batch:
    """The joins and leaves of one group not announced yet. A join and a leave of one channel in the same window
    cancel out (nobody saw it come); a leave then a join (new metadata) are both announced, leave first."""

    __slots__ = ("joins", "leaves")

    def __init__(self) -> None:
        self.joins: dict[str, Record] = {}
        self.leaves: dict[str, Record] = {}

    def joined(self, record: Record) -> None:
        self.joins[record.channel] = record

    def left(self, record: Record) -> None:
        if self.joins.pop(record.channel, None) is None:
            self.leaves[record.channel] = record


class Presence:
    """The presence of one channel layer's groups. Get it with ``get_presence(layer)``, not by building one.

    Raises ``TypeError`` for an invalid group or channel name, a user id that is not a str or int, or metadata that is
    not a JSON object; ``ValueError`` for metadata over ``max_metadata_size`` bytes of JSON. In each case nothing is
    stored and no event is sent.
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        *,
        ttl: float = DEFAULT_TTL,
        heartbeat: float = DEFAULT_HEARTBEAT,
        batch_window: float = DEFAULT_BATCH_WINDOW,
        max_metadata_size: int = DEFAULT_MAX_METADATA_SIZE,
    ) -> None:
        self.layer = layer
        check_options(ttl, heartbeat, batch_window, max_metadata_size)
        self.ttl = float(ttl)
        self.heartbeat = float(heartbeat)
        self.batch_window = float(batch_window)
        self.max_metadata_size = max_metadata_size
        #: The options it was made with, for ``get_presence`` to compare.
        self.options = {
            "ttl": ttl,
            "heartbeat": heartbeat,
            "batch_window": batch_window,
            "max_metadata_size": max_metadata_size,
        }
        #: This process's joins: group -> channel -> record (to leave on close, and to store again after a reap).
        self.local: dict[str, dict[str, Record]] = {}
        self._batches: dict[str, _Batch] = {}
        #: Connections this process announced as joined and as left, since it started (``stats()``): its own joins and
        #: leaves, and with Redis the members of a dead process it reaped (left) and its own stored again after it was
        #: reaped itself (joined), so that joins minus leaves, added up over the processes, is who is present.
        self.joined = 0
        self.left = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    # The API -------------------------------------------------------------------------------------------------------

    async def join(
        self,
        group: str,
        channel: str,
        *,
        user: str | int | None = None,
        meta: dict[str, Any] | None = None,
        listen: bool = True,
    ) -> bool:
        """Make ``channel`` present in ``group`` as ``user`` (default: the channel itself, an anonymous person) with
        ``meta``; joining again replaces the metadata. With ``listen`` the channel also receives the group's
        ``presence.join`` / ``presence.leave`` events. Returns whether the channel was new in the group (announced)."""
        self.require_valid_group(group)
        self.layer.require_valid_channel_name(channel)
        record = self.make_record(channel, user, meta)
        if listen:
            await self.layer.group_add(events_group(group), channel)
        # Noted here before storing, so that a concurrent leave of the group's last other member, finishing first,
        # sees the group still in use by this process (the Redis backend's group set depends on it).
        first = group not in self.local
        mine = self.local.setdefault(group, {})
        previous = mine.get(channel)
        mine[channel] = record
        try:
            new = await self._store_join(group, record, first)
        except BaseException:
            if previous is not None:
                mine[channel] = previous
            else:
                self._forget(group, channel)
            if listen:
                await self.layer.group_discard(events_group(group), channel)
            raise
        if new:
            self._announce(group, joined=[record])
        return new

    async def leave(self, group: str, channel: str) -> bool:
        """Take ``channel`` out of ``group``'s presence (and its events); whether it was present."""
        self.require_valid_group(group)
        self.layer.require_valid_channel_name(channel)
        self._forget(group, channel)
        removed = await self._store_leave(group, channel)
        await self.layer.group_discard(events_group(group), channel)
        if removed is not None:
            self._announce(group, left=[removed])
        return removed is not None

    def stats(self) -> dict[str, int]:
        """What this process does in presence, for metrics (``tether.metrics``): ``connections`` present through it
        now, ``groups`` they are in, and ``joined`` / ``left``, the joins and leaves it announced since it started
        (a member of a process that died is counted as a leave by the process that reaps it).

        Read from the metrics exporter's thread while the loop joins and leaves: ``local`` is copied with ``list()``
        (one step for the interpreter) before it is iterated."""
        groups = list(self.local.values())
        return {
            "connections": sum(len(channels) for channels in groups),
            "groups": len(groups),
            "joined": self.joined,
            "left": self.left,
        }

    async def members(self, group: str) -> list[Member]:
        """Who is present in ``group``: one ``Member`` per user, in the order they joined."""
        self.require_valid_group(group)
        return group_records(await self._store_list(group))

    async def count(self, group: str) -> PresenceCount:
        """How many users and connections are present in ``group``."""
        self.require_valid_group(group)
        records = await self._store_list(group)
        return PresenceCount(len({record.user for record in records}), len(records))

    async def close(self) -> None:
        """Leave every group this process joined, send the events still batched, and stop background work."""
        try:
            for group, channels in list(self.local.items()):
                for channel in list(channels):
                    await self.leave(group, channel)
        except Exception as exc:  # Redis away: the members are dropped within ttl of the last heartbeat instead
            logger.warning("Presence could not leave its groups on close (%s); they are dropped after ttl", exc)
        await self.flush_events()
        await self._stop()
        self.local.clear()

    def _forget(self, group: str, channel: str) -> None:
        mine = self.local.get(group)
        if mine is not None:
            mine.pop(channel, None)
            if not mine:
                del self.local[group]

    # Checks --------------------------------------------------------------------------------------------------------

    def require_valid_group(self, group: Any) -> None:
        """``TypeError`` unless ``group`` is a valid group name short enough for its events group."""
        self.layer.require_valid_group_name(group)
        longest = MAX_NAME_LENGTH - 1 - len(_EVENTS_PREFIX)
        if len(group) > longest:
            raise TypeError(
                f"Presence group name {group[:40]!r}... is {len(group)} characters long; a presence group's name must "
                f"be at most {longest} characters (its events go to the group {_EVENTS_PREFIX!r} + name)."
            )

    def make_record(self, channel: str, user: Any, meta: Any) -> Record:
        """A record for ``channel``, with the user id and metadata checked (see the class docs for the errors)."""
        if user is None:
            user_id = channel
        elif isinstance(user, bool) or not isinstance(user, (str, int)):
            raise TypeError(f"Presence user must be a str or an int (a user id), not {type(user).__name__}.")
        else:
            user_id = str(user)
            if not user_id or len(user_id) > MAX_USER_LENGTH:
                raise ValueError(f"Presence user id must be 1 to {MAX_USER_LENGTH} characters, not {user_id[:40]!r}.")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise TypeError(f"Presence metadata must be a dict (a JSON object), not {type(meta).__name__}.")
        try:
            encoded = json.dumps(meta, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Presence metadata must be JSON-serialisable (str keys; str, numbers, bools, None, lists and "
                f"dicts): {exc}. Convert the value first, for example str(user.pk)."
            ) from None
        size = len(encoded.encode("utf-8"))
        if size > self.max_metadata_size:
            raise ValueError(
                f"Presence metadata is {size} bytes of JSON, over max_metadata_size ({self.max_metadata_size}); keep "
                "it to what a list of who is here shows (an id, a name, a device), or raise max_metadata_size in "
                "TETHER_PRESENCE."
            )
        # What is stored and listed is the JSON round trip, so every backend gives back the same values.
        return Record(channel, user_id, json.loads(encoded), _now_ms())

    # Events --------------------------------------------------------------------------------------------------------

    def _announce(self, group: str, joined: Sequence[Record] = (), left: Sequence[Record] = ()) -> None:
        """Add joins and leaves to ``group``'s batch; the batch goes out ``batch_window`` seconds after it opened.

        Every announced join and leave is counted here (``stats()``), whichever path announced it."""
        self.joined += len(joined)
        self.left += len(left)
        batch = self._batches.get(group)
        if batch is None:
            batch = self._batches[group] = _Batch()
        for record in left:
            batch.left(record)
        for record in joined:
            batch.joined(record)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.batch_window, self._send_batches)

    def _send_batches(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush_events())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def flush_events(self) -> None:
        """Send every batched event now (the window's timer does it otherwise)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batches, self._batches = self._batches, {}
        for group, batch in batches.items():
            for kind, records in (("presence.leave", batch.leaves), ("presence.join", batch.joins)):
                entries = [record.event_entry() for record in records.values()]
                for start in range(0, len(entries), MAX_EVENT_MEMBERS):
                    event = {"type": kind, "group": group, "members": entries[start : start + MAX_EVENT_MEMBERS]}
                    try:
                        await self.layer.group_send(events_group(group), event)
                    except Exception as exc:
                        logger.warning("A %s event for presence group %r was lost: %s", kind, group, exc)

    async def _stop(self) -> None:
        """Cancel the timer and wait for the events being sent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    # For backends --------------------------------------------------------------------------------------------------

    async def _store_join(self, group: str, record: Record, first: bool) -> bool:
        """Store ``record`` (``first``: the first of this process in ``group``); whether the channel was new."""
        raise NotImplementedError

    async def _store_leave(self, group: str, channel: str) -> Record | None:
        raise NotImplementedError

    async def _store_list(self, group: str) -> list[Record]:
        raise NotImplementedError


def _now_ms() -> int:
    return int(time.time() * 1000)


_trackers: weakref.WeakKeyDictionary[BaseChannelLayer, Presence] = weakref.WeakKeyDictionary()


def settings_options() -> dict[str, Any]:
    """The ``TETHER_PRESENCE`` setting (a dict of ``ttl``, ``heartbeat``, ``batch_window``, ``max_metadata_size``)."""
    from django.conf import settings

    if not settings.configured:
        return {}
    options = getattr(settings, "TETHER_PRESENCE", None) or {}
    if not isinstance(options, dict):
        raise TypeError(f"TETHER_PRESENCE must be a dict, not {type(options).__name__}.")
    unknown = sorted(set(options) - {"ttl", "heartbeat", "batch_window", "max_metadata_size"})
    if unknown:
        raise TypeError(
            f"TETHER_PRESENCE has unknown key(s) {unknown}; it takes ttl, heartbeat, batch_window, max_metadata_size."
        )
    return dict(options)


def check_settings() -> None:
    """Read and check ``TETHER_PRESENCE`` as ``get_presence`` will: ``TypeError`` / ``ValueError`` naming the key."""
    check_options(**settings_options())


def existing_presence(layer: BaseChannelLayer) -> Presence | None:
    """The presence tracker of ``layer`` if one was made, without making one (for metrics)."""
    return _trackers.get(layer)


def get_presence(layer: BaseChannelLayer | None = None, **options: Any) -> Presence:
    """The presence tracker of ``layer`` (by default the ``default`` channel layer), made on first use with
    ``options`` or else the ``TETHER_PRESENCE`` setting; later calls return the same tracker (``ValueError`` if they
    pass other options).

    Raises ``TypeError`` for a layer without a presence backend (the in-memory and the two Redis layers have one).
    """
    from tether.layers.manager import layer_or_default

    layer = layer_or_default(layer, "Presence")
    tracker = _trackers.get(layer)
    if tracker is not None:
        if options and any(tracker.options.get(name) != value for name, value in options.items()):
            raise ValueError(
                f"The presence of this layer was made with {tracker.options}; get_presence() cannot change it to "
                f"{options}. Pass the options on the first call only, or set TETHER_PRESENCE."
            )
        return tracker
    chosen = options or settings_options()
    from tether.layers.inmemory import InMemoryChannelLayer

    if isinstance(layer, InMemoryChannelLayer):
        from tether.presence.memory import MemoryPresence

        tracker = MemoryPresence(layer, **chosen)
    elif type(layer).__module__.startswith("tether.layers.redis"):  # without importing redis-py for other layers
        from tether.layers.redis.base import RedisLayerBase
        from tether.presence.redis import RedisPresence

        if not isinstance(layer, RedisLayerBase):
            raise TypeError(f"{type(layer).__name__} has no presence backend.")
        tracker = RedisPresence(layer, **chosen)
    else:
        raise TypeError(
            f"{type(layer).__name__} has no presence backend; use InMemoryChannelLayer, RedisChannelLayer or "
            "RedisPubSubChannelLayer."
        )
    _trackers[layer] = tracker
    return tracker
