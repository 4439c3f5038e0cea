"""``group_sizes()``, which tether.status reads once a snapshot: every layer counts this process's members of the
groups that had a message (RedisChannelLayer learns them from the group's messages; the others know them at once)."""

from __future__ import annotations

import asyncio
from typing import Any

WAIT = 10


async def test_group_sizes_count_this_process_members(layer: Any) -> None:
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels[:2]:
        await layer.group_add("room", channel)
    await layer.group_add("lobby", channels[2])
    await layer.group_send("room", {"type": "hello"})
    await layer.group_send("lobby", {"type": "hello"})
    for channel in channels:
        assert (await asyncio.wait_for(layer.receive(channel), WAIT))["type"] == "hello"
    sizes = layer.group_sizes()
    assert sizes["room"] == 2
    assert sizes["lobby"] == 1
