"""Who is connected where, asked of every chat connection by the dashboard's ticker.

The ticker sends a ``presence.ping`` to ``PRESENCE_GROUP`` once per round; every chat connection answers on the
channel named in the ping with a ``presence.pong`` that says who it is and which rooms it has joined. A connection
that is gone does not answer, so counts heal by themselves after a crash, and the same works across processes with
the Redis layer. ``PresenceMixin`` gives a consumer the answering side; ``PresenceTally`` turns one round's answers
into counts and does no I/O.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from tether.exceptions import ChannelFull

__all__ = ["PRESENCE_GROUP", "PresenceMixin", "PresenceTally", "pong"]

logger = logging.getLogger("chat.presence")

#: Every chat connection is a member of this group.
PRESENCE_GROUP = "chat.presence"


def pong(round_id: int, connection: str, username: str | None, rooms: list[str]) -> dict[str, Any]:
    """The answer of one connection to the ping of round ``round_id``."""
    return {"type": "presence.pong", "round": round_id, "connection": connection, "user": username, "rooms": rooms}


class PresenceTally:
    """Counts the answers to one ping round at a time.

    ``start_round()`` closes the current round, keeps its counts as ``last`` and returns the new round's id.
    Answers to an older round are ignored. A user connected twice to a room counts once; each guest connection
    (no username) counts as one guest.
    """

    def __init__(self) -> None:
        self.round = 0
        self._members: dict[str, set[str]] = defaultdict(set)
        self._online: set[str] = set()
        self.last: dict[str, Any] = {"rooms": {}, "online": 0}

    def start_round(self) -> int:
        self.last = {
            "rooms": {room: len(members) for room, members in sorted(self._members.items())},
            "online": len(self._online),
        }
        self._members = defaultdict(set)
        self._online = set()
        self.round += 1
        return self.round

    def record(self, answer: dict[str, Any]) -> bool:
        """Count one ``presence.pong``; False when it belongs to another round or is malformed."""
        if answer.get("round") != self.round:
            return False
        rooms = answer.get("rooms")
        connection = answer.get("connection")
        if not isinstance(rooms, list) or not isinstance(connection, str):
            return False
        username = answer.get("user")
        who = f"user:{username}" if isinstance(username, str) and username else f"guest:{connection}"
        self._online.add(who)
        for room in rooms:
            if isinstance(room, str):
                self._members[room].add(who)
        return True


class PresenceMixin:
    """Mix into a WebSocket consumer to be counted on the dashboard: call ``join_presence()`` in ``connect()`` and
    ``leave_presence()`` in ``disconnect()``. The consumer's ``rooms`` (a set of room names) is what it reports.
    """

    rooms: set[str]

    async def join_presence(self) -> None:
        await self.channel_layer.group_add(PRESENCE_GROUP, self.channel_name)

    async def leave_presence(self) -> None:
        await self.channel_layer.group_discard(PRESENCE_GROUP, self.channel_name)

    async def presence_ping(self, event: dict[str, Any]) -> None:
        """Layer event ``presence.ping``: answer who is here on the channel the ticker names."""
        user = self.scope.get("user")
        username = user.get_username() if user is not None and user.is_authenticated else None
        answer = pong(event["round"], self.channel_name, username, sorted(getattr(self, "rooms", ())))
        try:
            await self.channel_layer.send(event["reply_to"], answer)
        except ChannelFull:
            logger.debug("The presence channel %s is full; this connection goes uncounted.", event["reply_to"])
