"""RedisPubSubChannelLayer behaviour beyond the shared API tests: what it does where pub/sub keeps nothing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.layers.conftest import eventually
from tether.exceptions import ChannelFull
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


# Named channels nobody receives on ------------------------------------------------------------------------------


async def receiving_subscribed(layer, channel, shared_redis) -> asyncio.Task:
    """A receive on ``channel`` by ``layer``, once its subscription to the channel's topic is in place."""
    task = asyncio.create_task(layer.receive(channel))
    topic = layer.keys.channel(channel)
    await eventually(lambda: dict(shared_redis.pubsub_numsub(topic))[topic.encode()] == 1)
    return task


async def test_messages_for_a_named_channel_nobody_receives_on_are_kept_up_to_capacity_then_refused():
    async with processes_on(RedisPubSubChannelLayer, 1, capacity=3) as (sender,):
        for number in range(3):
            await sender.send("reports", {"type": "report", "n": number})
        with pytest.raises(ChannelFull, match="Nobody receives on channel 'reports'"):
            await sender.send("reports", {"type": "report", "n": 3})
        assert sender.stats()["parked"] == 3


async def test_kept_messages_go_out_in_order_ahead_of_the_next_send_once_a_receiver_subscribes(shared_redis):
    async with processes_on(RedisPubSubChannelLayer, 2, capacity=50) as (sender, worker):
        for number in range(20):
            await sender.send("reports", {"type": "report", "n": number})
        first = await receiving_subscribed(worker, "reports", shared_redis)
        for number in range(20, 30):
            await sender.send("reports", {"type": "report", "n": number})
        received = [(await asyncio.wait_for(first, WAIT))["n"]]
        received += [(await receive(worker, "reports"))["n"] for _ in range(29)]
        assert received == list(range(30))
        assert sender.stats()["parked_published"] == 20


async def test_a_named_channel_kept_full_takes_sends_again_once_a_receiver_subscribes(shared_redis):
    async with processes_on(RedisPubSubChannelLayer, 2, capacity=3) as (sender, worker):
        for number in range(3):
            await sender.send("reports", {"type": "report", "n": number})
        first = await receiving_subscribed(worker, "reports", shared_redis)
        await sender.send("reports", {"type": "report", "n": 3})  # was ChannelFull for good
        assert (await asyncio.wait_for(first, WAIT))["n"] == 0
        assert sender.stats()["parked_published"] == 3


async def test_kept_messages_that_expire_are_counted_and_logged(caplog):
    async with processes_on(RedisPubSubChannelLayer, 1, expiry=1) as (sender,):
        for number in range(3):
            await sender.send("reports", {"type": "report", "n": number})
        await asyncio.sleep(1.1)  # past expiry
        with caplog.at_level(logging.WARNING, logger="tether.layers.redis"):
            await sender.send("reports", {"type": "report", "n": 3})
        assert sender.stats()["expired"] == 3
        assert "'reports' expired unread" in caplog.text
        assert (await receive(sender, "reports"))["n"] == 3
