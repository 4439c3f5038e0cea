"""Another OS process for the presence tests: it joins members to a group's presence, then only heartbeats.

Run as ``python presence_peer.py <layer class> <hosts as JSON> <prefix> <group> <members> <ttl> <heartbeat>``. It
prints one JSON line ``{"channels": [...]}`` once its members are stored, then waits to be stopped or killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from tether.layers import redis as redis_layers
from tether.presence import get_presence


async def main(class_name: str, hosts: str, prefix: str, group: str, count: str, ttl: str, heartbeat: str) -> None:
    layer = getattr(redis_layers, class_name)(hosts=json.loads(hosts), prefix=prefix)
    presence = get_presence(layer, ttl=float(ttl), heartbeat=float(heartbeat), batch_window=0.02)
    channels = [await layer.new_channel() for _ in range(int(count))]
    for number, channel in enumerate(channels):
        await presence.join(group, channel, user=f"peer-{number % 3}", meta={"n": number}, listen=False)
    print(json.dumps({"channels": channels}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
