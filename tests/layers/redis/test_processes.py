"""Two real OS processes exchanging direct messages and group broadcasts through each Redis layer."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.layers.conftest import REDIS_URL
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

from .conftest import layer_on, new_prefix

PEER = Path(__file__).with_name("peer_process.py")
WAIT = 15


async def read_json_line(process: asyncio.subprocess.Process) -> dict:
    line = await asyncio.wait_for(process.stdout.readline(), WAIT)
    assert line, "the peer process ended early"
    return json.loads(line)


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
async def test_two_processes_exchange_messages_and_group_broadcasts(layer_class):
    prefix = new_prefix()
    peer = await asyncio.create_subprocess_exec(
        sys.executable, str(PEER), layer_class.__name__, REDIS_URL, prefix, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with layer_on(layer_class, prefix=prefix) as layer:
            peer_channel = (await read_json_line(peer))["channel"]
            mine = await layer.new_channel()
            await layer.group_add("peers", mine)

            for number in range(3):
                await layer.send(peer_channel, {"type": "peer.ping", "n": number, "reply_to": mine})
            pongs = [await asyncio.wait_for(layer.receive(mine), WAIT) for _ in range(3)]
            assert pongs == [{"type": "peer.pong", "n": number} for number in range(3)]

            await layer.group_send("peers", {"type": "peer.broadcast", "text": "to everyone"})
            assert await asyncio.wait_for(layer.receive(mine), WAIT) == {
                "type": "peer.broadcast",
                "text": "to everyone",
            }
            seen = [await read_json_line(peer) for _ in range(4)]
            assert seen[-1] == {"type": "peer.broadcast", "text": "to everyone"}

            await layer.send(peer_channel, {"type": "peer.stop"})
            assert await asyncio.wait_for(peer.wait(), WAIT) == 0
    finally:
        if peer.returncode is None:
            peer.kill()
            await peer.wait()
