"""A second OS process for the cross-process tests: it joins a group and answers on the layer.

Run as ``python peer_process.py <RedisChannelLayer|RedisPubSubChannelLayer> <redis url> <prefix>``. It prints one JSON
line ``{"channel": ...}`` once it listens, then one JSON line per message it receives; ``peer.ping`` is answered with
``peer.pong`` to the message's ``reply_to`` channel, and ``peer.stop`` ends the process.
"""

from __future__ import annotations

import asyncio
import json
import sys

from tether.layers import redis as redis_layers


async def main(class_name: str, url: str, prefix: str) -> None:
    layer = getattr(redis_layers, class_name)(hosts=[url], prefix=prefix)
    channel = await layer.new_channel()
    await layer.group_add("peers", channel)
    print(json.dumps({"channel": channel}), flush=True)
    try:
        while True:
            message = await layer.receive(channel)
            print(json.dumps(message), flush=True)
            if message["type"] == "peer.ping":
                await layer.send(message["reply_to"], {"type": "peer.pong", "n": message["n"]})
            elif message["type"] == "peer.stop":
                return
    finally:
        await layer.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
