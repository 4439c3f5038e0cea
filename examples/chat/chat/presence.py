"""Who is online, for the dashboard: counted by tether's presence (``tether.presence``), not asked of every
connection.

Every chat and dashboard connection is present in ``ONLINE_GROUP`` (the consumers' ``presence_groups``), and a room
page is present in its room's stream (it subscribes with presence), so counting is reading: ``presence_counts``
asks the presence tracker for each room's count and the site's. A user with several tabs counts once; each guest
connection counts as one guest. With the Redis layers the counts cover every process, and the connections of a
process that died are gone from them within the presence TTL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from chat.streams import room_stream
from tether.presence import get_presence

__all__ = ["ONLINE_GROUP", "presence_counts"]

#: Every chat and dashboard connection is present in this group.
ONLINE_GROUP = "chat.online"


async def presence_counts(layer: Any, rooms: Iterable[str]) -> dict[str, Any]:
    """``{"rooms": {room: users present}, "online": users on the site}``, for the rooms named."""
    presence = get_presence(layer)
    names = list(rooms)
    counts = await asyncio.gather(presence.count(ONLINE_GROUP), *(presence.count(room_stream(name)) for name in names))
    online, *in_rooms = counts
    return {"rooms": {name: count.users for name, count in zip(names, in_rooms, strict=True)}, "online": online.users}
