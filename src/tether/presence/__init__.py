"""Presence: who is in a group, with per-member metadata, and ``presence.join`` / ``presence.leave`` events.

``get_presence(layer)`` gives the presence tracker of a channel layer (one per layer instance): ``join`` a channel to
a group's presence with a user and metadata, ``leave``, list the ``members`` (grouped by user: three tabs of one user
are one ``Member`` with three ``Connection`` objects), ``count`` them. A channel that joins hears the group's join and
leave events as ordinary consumer messages, batched per group over ``batch_window`` seconds (one event lists every
member that joined or left meanwhile). ``PresenceConsumerMixin`` / ``AsyncPresenceConsumerMixin`` (in
``tether.presence.consumer``) join the groups a WebSocket consumer declares in ``presence_groups`` and leave them on
disconnect.

The in-memory layer keeps presence in the process; the Redis layers keep it in Redis, with one heartbeat per process
(not per member), so a process that dies without leaving has its members dropped within ``ttl`` seconds
(docs/presence.md gives the bounds and the Redis cost).
"""

from __future__ import annotations

from tether.presence.base import (
    DEFAULT_BATCH_WINDOW,
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_METADATA_SIZE,
    DEFAULT_TTL,
    Connection,
    Member,
    Presence,
    PresenceCount,
    events_group,
    get_presence,
)

__all__ = [
    "DEFAULT_BATCH_WINDOW",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_METADATA_SIZE",
    "DEFAULT_TTL",
    "Connection",
    "Member",
    "Presence",
    "PresenceCount",
    "events_group",
    "get_presence",
]
