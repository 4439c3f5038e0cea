"""The numbers the dashboard shows, computed from the database and the presence counts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone

from chat.models import Message, Room
from tether.db import database_sync_to_async

__all__ = [
    "MINUTES_SHOWN",
    "ROOMS_SHOWN",
    "build_snapshot",
    "load_room_names",
    "messages_per_minute",
    "room_names",
    "snapshot",
]

#: The message chart covers this many minutes, the current one included.
MINUTES_SHOWN = 30
#: The presence chart shows at most this many rooms, the busiest first.
ROOMS_SHOWN = 12
#: Rooms whose presence is counted, at most.
ROOMS_COUNTED = 200


def room_names() -> list[str]:
    """The rooms whose presence the dashboard counts (the first ``ROOMS_COUNTED``)."""
    return list(Room.objects.order_by("name").values_list("name", flat=True)[:ROOMS_COUNTED])


def messages_per_minute(now: datetime, minutes: int = MINUTES_SHOWN) -> list[dict[str, Any]]:
    """Messages posted in each of the last ``minutes`` minutes up to ``now``, oldest first (zeros included)."""
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    rows = (
        Message.objects.filter(created__gte=start)
        .annotate(minute=TruncMinute("created"))
        .order_by()
        .values("minute")
        .annotate(count=Count("id"))
    )
    counts = {row["minute"]: row["count"] for row in rows}
    series = []
    for offset in range(minutes):
        minute = start + timedelta(minutes=offset)
        series.append({"minute": minute.isoformat(), "count": counts.get(minute, 0)})
    return series


def snapshot(presence: dict[str, Any], interval: float, now: datetime | None = None) -> dict[str, Any]:
    """Everything one dashboard update holds; ``presence`` is what ``chat.presence.presence_counts`` returns."""
    now = now or timezone.now()
    series = messages_per_minute(now)
    in_rooms = presence["rooms"]
    rooms = [{"room": name, "users": users} for name, users in in_rooms.items()]
    rooms.sort(key=lambda row: (-row["users"], row["room"]))
    return {
        "type": "dashboard",
        "generated": now.isoformat(),
        "interval": interval,
        "messages_per_minute": series,
        "messages_recent": sum(point["count"] for point in series),
        "rooms": rooms[:ROOMS_SHOWN],
        "online": presence["online"],
    }


build_snapshot = database_sync_to_async(snapshot)
load_room_names = database_sync_to_async(room_names)
