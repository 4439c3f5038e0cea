"""What a process buffers is bounded by its channels, not by what frames name (own_channels.py): frames naming
channels this process does not have are counted and dropped, never buffered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from tests.layers.conftest import eventually
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from tether.layers.redis.storage import now_ms, pack_frame

from .conftest import layer_on, processes_on

WAIT = 5
MANY = 50_000


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


@contextlib.asynccontextmanager
async def forgetful_process() -> AsyncIterator[tuple[Any, Any]]:
    """A sender and a process of one project; the process forgets channels after ``expiry=1`` s, the sender's
    messages keep the default expiry (so that a busy machine does not expire them on their way)."""
    async with (
        layer_on(RedisChannelLayer, expiry=1) as process,
        layer_on(RedisChannelLayer, prefix=process.prefix) as sender,
    ):
        yield sender, process


async def until_forgotten(process, channel: str) -> None:
    """Make channels until ``process`` has forgotten ``channel`` (it looks as channels are made, at most every
    expiry / 2)."""
    deadline = asyncio.get_running_loop().time() + 10
    while channel in process._own:
        assert asyncio.get_running_loop().time() < deadline, f"{channel} was never forgotten"
        await asyncio.sleep(0.1)
        await process.new_channel()


def made_up(layer, count: int) -> list[str]:
    """Names with the layer's client id that its new_channel() never made."""
    return [f"specific.{layer.client_id}!made-up-{number}" for number in range(count)]


async def test_a_frame_naming_fifty_thousand_channels_buffers_only_for_the_real_one(shared_redis, caplog):
    async with layer_on(RedisChannelLayer) as layer:
        channel = await layer.new_channel()
        payload = layer.codec.encode({"type": "flood"})
        expires_at = now_ms() + 60_000
        names = ",".join([*made_up(layer, MANY), channel])
        with caplog.at_level(logging.WARNING, logger="tether.layers.redis"):
            shared_redis.rpush(
                layer.keys.inbox(layer.client_id),
                pack_frame(expires_at, payload, "", names),
                pack_frame(expires_at, payload, "room", names),
            )
            assert await receive(layer, channel) == {"type": "flood"}
            assert await receive(layer, channel) == {"type": "flood"}
        stats = layer.stats()
        assert stats["unknown_channel_drops"] == 2 * MANY
        assert (stats["local_queued"], stats["local_channels"]) == (0, 0)
        # Logged once per frame (for the direct frame's first stranger, and for the group), not once per name.
        assert len([record for record in caplog.records if "unknown_channel_drops" in record.getMessage()]) == 2


async def test_a_group_list_naming_channels_of_nobody_here_is_accepted_once_for_the_real_members(shared_redis):
    async with processes_on(RedisChannelLayer) as (sender, process):
        channel = await process.new_channel()
        await process.group_add("room", channel)
        for name in made_up(process, 1000):
            await sender.group_add("room", name)
        for number in range(3):
            await sender.group_send("room", {"type": "room", "n": number})
        for number in range(3):
            assert (await receive(process, channel))["n"] == number
        # The list came once (then its token): its 1,000 strangers were counted once.
        assert process.stats()["unknown_channel_drops"] == 1000
        assert process.stats()["local_queued"] == 0


async def test_a_channel_of_a_flushed_process_gets_nothing_buffered():
    async with processes_on(RedisChannelLayer) as (sender, process):
        channel = await process.new_channel()
        await process.flush()
        await sender.send(channel, {"type": "late"})
        await eventually(lambda: process.stats()["unknown_channel_drops"] == 1)
        assert process.stats()["local_queued"] == 0


async def test_a_channel_nobody_received_on_for_expiry_is_forgotten_and_a_receive_brings_it_back():
    async with forgetful_process() as (sender, process):
        channel = await process.new_channel()
        await until_forgotten(process, channel)
        await sender.send(channel, {"type": "gone"})
        await eventually(lambda: process.stats()["unknown_channel_drops"] == 1)

        waiting = asyncio.ensure_future(receive(process, channel))
        await eventually(lambda: process.stats()["local_channels"] == 1)
        await sender.send(channel, {"type": "back"})
        assert await waiting == {"type": "back"}


async def test_the_pubsub_layer_drops_direct_messages_for_channels_it_does_not_have():
    async with processes_on(RedisPubSubChannelLayer) as (sender, process):
        channel = await process.new_channel()
        stranger = made_up(process, 1)[0]
        await sender.send(stranger, {"type": "nobody"})
        await sender.send(channel, {"type": "someone"})
        assert await receive(process, channel) == {"type": "someone"}
        await eventually(lambda: process.stats()["unknown_channel_drops"] == 1)
        assert process.stats()["local_queued"] == 0


async def test_a_forgotten_group_member_that_receives_again_gets_the_group_messages_again():
    async with forgetful_process() as (sender, process):
        member, forgotten = await process.new_channel(), await process.new_channel()
        for channel in (member, forgotten):
            await process.group_add("room", channel)
        waiting = asyncio.ensure_future(receive(process, member))
        await until_forgotten(process, forgotten)
        await sender.group_send("room", {"type": "room", "n": 1})
        assert (await waiting)["n"] == 1
        await eventually(lambda: process.stats()["unknown_channel_drops"] == 1)

        waiting = asyncio.ensure_future(receive(process, forgotten))
        await eventually(lambda: process.stats()["local_channels"] == 1)
        await sender.group_send("room", {"type": "room", "n": 2})
        assert (await waiting)["n"] == 2
        assert (await receive(process, member))["n"] == 2
