"""RedisPubSubChannelLayer behaviour beyond the shared API tests: what it does where pub/sub keeps nothing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.layers.conftest import eventually
from tether.layers.redis import RedisPubSubChannelLayer

from .conftest import processes_on

WAIT = 5


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def test_a_group_message_reaches_members_in_every_subscribed_process():
    async with processes_on(RedisPubSubChannelLayer, 3) as layers:
        channels = [(layer, await layer.new_channel()) for layer in layers for _ in range(2)]
        for layer, channel in channels:
            await layer.group_add("lobby", channel)
        await layers[0].group_send("lobby", {"type": "lobby.news"})
        for layer, channel in channels:
            assert await receive(layer, channel) == {"type": "lobby.news"}
        assert sum(layer.stats()["group_delivered"] for layer in layers) == 6


async def test_a_message_for_a_process_that_is_gone_is_counted_and_logged_once(caplog):
    async with processes_on(RedisPubSubChannelLayer, 2) as (sender, receiver):
        channel = await receiver.new_channel()
        await receiver.close()  # the process went away: nobody subscribes to its topic any more
        with caplog.at_level(logging.WARNING, logger="tether.layers.redis"):
            await sender.send(channel, {"type": "lost"})
            await sender.send(channel, {"type": "lost.again"})
        assert sender.stats()["undeliverable"] == 2
        warnings = [record.getMessage() for record in caplog.records if channel in record.getMessage()]
        assert len(warnings) == 1


async def test_adding_another_processs_channel_to_a_group_is_refused():
    async with processes_on(RedisPubSubChannelLayer, 2) as (first, second):
        channel = await second.new_channel()
        with pytest.raises(ValueError, match="belongs to another process"):
            await first.group_add("room", channel)


async def test_group_members_past_group_expiry_are_dropped_and_counted():
    async with processes_on(RedisPubSubChannelLayer, 1, group_expiry=1) as (layer,):
        channel = await layer.new_channel()
        await layer.group_add("short", channel)
        await asyncio.sleep(1.2)
        await layer.group_send("short", {"type": "late"})
        await layer.send(channel, {"type": "marker"})
        assert await receive(layer, channel) == {"type": "marker"}
        assert layer.stats()["group_members_expired"] == 1


async def test_a_full_member_is_skipped_and_counted_by_the_receiving_process():
    async with processes_on(RedisPubSubChannelLayer, 2, capacity=1) as (sender, receiver):
        channel = await receiver.new_channel()
        await receiver.group_add("ticks", channel)
        for number in range(3):
            await sender.group_send("ticks", {"type": "tick", "n": number})
        assert (await receive(receiver, channel))["n"] == 0
        # The other two may still be on their way to the subscriber when the first is received.
        await eventually(lambda: receiver.stats()["group_full_drops"] == 2)


async def test_a_named_channel_is_broadcast_to_every_process_receiving_on_it():
    async with processes_on(RedisPubSubChannelLayer, 3) as (sender, first, second):
        waiting = [asyncio.ensure_future(layer.receive("announcements")) for layer in (first, second)]
        await asyncio.sleep(0.2)  # both subscribe
        await sender.send("announcements", {"type": "announce"})
        assert await asyncio.wait_for(asyncio.gather(*waiting), WAIT) == [{"type": "announce"}] * 2


async def test_encrypted_pubsub_messages_travel_between_processes():
    async with processes_on(RedisPubSubChannelLayer, 2, symmetric_encryption_keys=["k"]) as (sender, receiver):
        channel = await receiver.new_channel()
        await sender.send(channel, {"type": "secret"})
        assert await receive(receiver, channel) == {"type": "secret"}
