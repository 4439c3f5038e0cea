"""RedisChannelLayer behaviour beyond the shared API tests, on the shared Redis (each test under its own prefix).

Two layer instances in one test stand for two processes: each has its own client id, inbox and receive loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time

import pytest
from asgiref.sync import async_to_sync

from tests.layers.conftest import REDIS_URL, eventually
from tether.exceptions import ChannelFull, MessageTooLarge
from tether.layers.redis import RedisChannelLayer
from tether.layers.redis.storage import parse_frame

from .conftest import layer_on, processes_on

WAIT = 5


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def test_a_process_local_channel_receives_from_another_process():
    async with processes_on(RedisChannelLayer) as (first, second):
        channel = await second.new_channel()
        await first.send(channel, {"type": "hello", "from": "first"})
        assert await receive(second, channel) == {"type": "hello", "from": "first"}


async def test_group_send_reaches_members_in_every_process():
    async with processes_on(RedisChannelLayer, 3) as (first, second, third):
        channels = [(layer, await layer.new_channel()) for layer in (first, second, third) for _ in range(3)]
        for layer, channel in channels:
            await layer.group_add("room", channel)
        await third.group_add("room", "worker.queue")
        await third.group_send("room", {"type": "chat.message", "text": "hi"})
        for layer, channel in channels:
            assert await receive(layer, channel) == {"type": "chat.message", "text": "hi"}
        assert await receive(first, "worker.queue") == {"type": "chat.message", "text": "hi"}


async def add_absent_members(layer, group: str, count: int) -> list[str]:
    """Channels of a process that is not running, added to ``group``: its inbox keeps what group_send pushes."""
    members = [f"specific.AbsentProc!{number}" for number in range(count)]
    for member in members:
        await layer.group_add(group, member)
    return members


async def test_group_send_pushes_one_frame_per_process_listing_its_members(shared_redis):
    async with layer_on(RedisChannelLayer) as layer:
        members = await add_absent_members(layer, "broadcast", 5)
        await layer.group_send("broadcast", {"type": "news", "n": 1})
        frames = shared_redis.lrange(layer.keys.inbox("AbsentProc"), 0, -1)
        assert len(frames) == 1
        frame = parse_frame(frames[0])
        assert sorted(frame.targets) == sorted(members)
        assert frame.group == "broadcast"
        assert layer.codec.decode(frame.payload) == {"type": "news", "n": 1}


async def test_group_send_to_unchanged_members_sends_only_the_token_of_their_list(shared_redis):
    async with layer_on(RedisChannelLayer) as layer:
        members = await add_absent_members(layer, "broadcast", 5)
        await layer.group_send("broadcast", {"type": "news", "n": 1})
        await layer.group_send("broadcast", {"type": "news", "n": 2})
        first, second = (parse_frame(data) for data in shared_redis.lrange(layer.keys.inbox("AbsentProc"), 0, -1))
        assert sorted(first.targets) == sorted(members)
        assert second.targets == []
        assert second.token == first.token


async def test_a_membership_change_sends_the_list_again_under_a_new_token(shared_redis):
    async with layer_on(RedisChannelLayer) as layer:
        await layer.group_add("broadcast", "specific.AbsentProc!1")
        await layer.group_send("broadcast", {"type": "news", "n": 1})
        await layer.group_add("broadcast", "specific.AbsentProc!2")
        await layer.group_send("broadcast", {"type": "news", "n": 2})
        await layer.group_discard("broadcast", "specific.AbsentProc!1")
        await layer.group_send("broadcast", {"type": "news", "n": 3})
        frames = [parse_frame(data) for data in shared_redis.lrange(layer.keys.inbox("AbsentProc"), 0, -1)]
        assert [sorted(frame.targets) for frame in frames] == [
            ["specific.AbsentProc!1"],
            ["specific.AbsentProc!1", "specific.AbsentProc!2"],
            ["specific.AbsentProc!2"],
        ]
        assert len({frame.token for frame in frames}) == 3


async def test_members_get_group_messages_sent_by_token_in_another_process():
    async with processes_on(RedisChannelLayer) as (sender, members_process):
        channels = [await members_process.new_channel() for _ in range(3)]
        for channel in channels:
            await sender.group_add("room", channel)
        for number in range(3):
            await sender.group_send("room", {"type": "news", "n": number})
        for channel in channels:
            assert [(await receive(members_process, channel))["n"] for _ in range(3)] == [0, 1, 2]


async def test_a_process_that_lost_the_frame_with_its_member_list_asks_redis_and_still_delivers(shared_redis):
    async with processes_on(RedisChannelLayer) as (sender, members_process):
        channel = await members_process.new_channel()
        await sender.group_add("room", channel)
        await members_process.close()  # its receive loop stops; frames wait in its inbox
        await sender.group_send("room", {"type": "news", "n": 1})
        await sender.group_send("room", {"type": "news", "n": 2})
        inbox = members_process.keys.inbox(members_process.client_id)
        assert parse_frame(shared_redis.lpop(inbox)).targets == [channel]  # the frame with the list is lost
        assert await receive(members_process, channel) == {"type": "news", "n": 2}
        await sender.group_send("room", {"type": "news", "n": 3})
        assert await receive(members_process, channel) == {"type": "news", "n": 3}
        frames = shared_redis.lrange(inbox, 0, -1)
        assert frames == []


async def test_a_group_message_whose_members_cannot_be_read_back_is_counted_and_logged(shared_redis, caplog):
    async with processes_on(RedisChannelLayer) as (sender, members_process):
        channel = await members_process.new_channel()
        await sender.group_add("room", channel)
        await members_process.close()
        await sender.group_send("room", {"type": "news", "n": 1})
        await sender.group_send("room", {"type": "news", "n": 2})
        shared_redis.lpop(members_process.keys.inbox(members_process.client_id))  # the frame with the list is lost
        member_set = members_process.keys.group_members("room", members_process.client_id)
        shared_redis.delete(member_set)
        shared_redis.set(member_set, "not a sorted set")  # and asking Redis for the members fails
        with caplog.at_level(logging.WARNING, logger="tether.layers.redis"), pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(members_process.receive(channel), 0.5)
        assert members_process.stats()["group_members_unreadable"] == 1
        assert "A message for group 'room' was dropped: this process's members could not be read" in caplog.text


async def test_a_member_list_in_a_frame_that_expired_unread_still_serves_later_frames():
    async with processes_on(RedisChannelLayer, expiry=2) as (sender, members_process):
        channel, other = await members_process.new_channel(), await members_process.new_channel()
        await sender.group_add("room", channel)
        await members_process.close()
        await sender.group_send("room", {"type": "news", "n": 1})  # carries the list; expires unread at 2 s
        await asyncio.sleep(1.0)
        await sender.send(other, {"type": "keeps the inbox list alive"})  # until 3 s
        await asyncio.sleep(1.2)
        await sender.group_send("room", {"type": "news", "n": 2})  # the token only
        assert await receive(members_process, channel) == {"type": "news", "n": 2}
        assert members_process.stats()["expired"] == 1


async def test_a_local_channel_that_is_full_refuses_sends_from_other_processes():
    async with processes_on(RedisChannelLayer, capacity=2) as (owner, sender):
        channel = await owner.new_channel()
        await sender.send(channel, {"type": "fill", "n": 1})
        await sender.send(channel, {"type": "fill", "n": 2})
        deadline = time.monotonic() + WAIT
        while True:  # the owner tells Redis its channel is full as soon as the second message lands
            try:
                await sender.send(channel, {"type": "fill", "n": 3})
            except ChannelFull:
                break
            assert time.monotonic() < deadline, "the full channel kept accepting messages"
            await asyncio.sleep(0.02)
        assert (await receive(owner, channel))["n"] == 1
        assert (await receive(owner, channel))["n"] == 2


async def test_a_message_that_expires_in_a_local_buffer_is_never_delivered_and_is_counted():
    async with processes_on(RedisChannelLayer, expiry=1) as (owner, sender):
        channel = await owner.new_channel()
        await sender.send(channel, {"type": "stale"})
        await asyncio.sleep(1.3)
        await sender.send(channel, {"type": "fresh"})
        assert await receive(owner, channel) == {"type": "fresh"}
        assert owner.stats()["expired"] == 1


async def test_a_message_that_expires_in_redis_is_counted_by_its_receiver():
    async with layer_on(RedisChannelLayer, expiry=1) as layer:
        await layer.send("jobs", {"type": "stale"})
        await asyncio.sleep(0.6)
        await layer.send("jobs", {"type": "fresh"})  # keeps the list alive past the first message's expiry
        await asyncio.sleep(0.6)
        assert await receive(layer, "jobs") == {"type": "fresh"}
        assert layer.stats()["expired"] == 1


async def test_group_send_to_a_full_member_is_counted_and_logged_once_with_the_names(caplog):
    async with layer_on(RedisChannelLayer, capacity=1) as layer:
        await layer.group_add("alerts", "slow.worker")
        await layer.send("slow.worker", {"type": "filler"})
        with caplog.at_level(logging.WARNING, logger="tether.layers.redis"):
            for _ in range(3):
                await layer.group_send("alerts", {"type": "alert"})
        assert layer.stats()["group_full_drops"] == 3
        warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "'alerts'" in warnings[0] and "'slow.worker'" in warnings[0]


async def test_group_send_to_a_full_local_member_is_counted_by_the_receiving_process():
    async with layer_on(RedisChannelLayer, capacity=1) as layer:
        channel = await layer.new_channel()
        await layer.group_add("ticks", channel)
        for number in range(3):
            await layer.group_send("ticks", {"type": "tick", "n": number})
        # The inbox reader delivers in the background: receiving before it has seen all three would make room.
        await eventually(lambda: layer.stats()["group_full_drops"] == 2)
        assert (await receive(layer, channel))["n"] == 0


async def test_data_that_cannot_be_decoded_is_skipped_counted_and_logged_with_the_channel(shared_redis, caplog):
    async with layer_on(RedisChannelLayer) as layer:
        shared_redis.rpush(layer.keys.channel("intake"), b"garbage without bars")
        shared_redis.rpush(layer.keys.channel("intake"), b"99999999999999|||\xc1not msgpack")
        await layer.send("intake", {"type": "good"})
        with caplog.at_level(logging.WARNING, logger="tether.layers.redis"):
            assert await receive(layer, "intake") == {"type": "good"}
        assert layer.stats()["decode_errors"] == 2
        assert any("'intake'" in record.getMessage() for record in caplog.records)


async def test_encrypted_messages_are_unreadable_at_rest_and_readable_after_key_rotation(shared_redis):
    async with layer_on(RedisChannelLayer, symmetric_encryption_keys=["old-key"]) as old:
        rotated = RedisChannelLayer(hosts=[REDIS_URL], prefix=old.prefix, symmetric_encryption_keys=["new", "old-key"])
        stranger = RedisChannelLayer(hosts=[REDIS_URL], prefix=old.prefix, symmetric_encryption_keys=["new"])
        try:
            await old.send("vault", {"type": "secret", "text": "the launch code"})
            [stored] = shared_redis.lrange(old.keys.channel("vault"), 0, -1)
            assert b"launch" not in stored
            assert await receive(rotated, "vault") == {"type": "secret", "text": "the launch code"}
            await rotated.send("vault", {"type": "secret", "n": 2})
            await old.send("vault", {"type": "secret", "n": 3})
            assert await receive(stranger, "vault") == {"type": "secret", "n": 2}
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stranger.receive("vault"), 0.5)
            assert stranger.stats()["decode_errors"] == 1
        finally:
            await rotated.close()
            await stranger.close()


async def test_encrypted_group_messages_reach_members_in_another_process():
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=["k1"]) as (first, second):
        channel = await second.new_channel()
        await second.group_add("private", channel)
        await first.group_send("private", {"type": "secret"})
        assert await receive(second, channel) == {"type": "secret"}


async def test_one_megabyte_messages_go_to_a_group_across_processes():
    payload = bytes(range(256)) * 4096
    async with processes_on(RedisChannelLayer) as (first, second):
        channels = [await first.new_channel(), await second.new_channel()]
        await first.group_add("bulk", channels[0])
        await second.group_add("bulk", channels[1])
        await first.group_send("bulk", {"type": "bulk", "payload": payload})
        assert (await receive(first, channels[0]))["payload"] == payload
        assert (await receive(second, channels[1]))["payload"] == payload


async def test_a_message_over_max_message_size_raises_message_too_large():
    async with layer_on(RedisChannelLayer, max_message_size=64 * 1024) as layer:
        with pytest.raises(MessageTooLarge, match="max_message_size"):
            await layer.send("big", {"type": "big", "data": b"x" * 70_000})
        with pytest.raises(MessageTooLarge):
            await layer.group_send("big-group", {"type": "big", "data": b"x" * 70_000})


async def test_receiving_on_another_processs_channel_is_refused():
    async with processes_on(RedisChannelLayer) as (first, second):
        channel = await first.new_channel()
        with pytest.raises(ValueError, match="belongs to another process"):
            await second.receive(channel)


async def test_five_thousand_concurrent_sends_from_one_process_all_arrive(shared_redis):
    async with layer_on(RedisChannelLayer, capacity=10_000) as layer:
        await asyncio.wait_for(
            asyncio.gather(*(layer.send("firehose", {"type": "n", "n": n}) for n in range(5000))), 30
        )
        assert shared_redis.llen(layer.keys.channel("firehose")) == 5000
        assert layer.stats()["sent"] == 5000


async def test_five_thousand_concurrent_sends_to_local_channels_all_arrive():
    async with layer_on(RedisChannelLayer, inbox_capacity=20_000) as layer:
        channels = [await layer.new_channel() for _ in range(50)]
        await asyncio.wait_for(
            asyncio.gather(*(layer.send(channels[n % 50], {"type": "n", "n": n}) for n in range(5000))), 30
        )
        got = [(await receive(layer, channel))["n"] for channel in channels for _ in range(100)]
        assert sorted(got) == list(range(5000))


async def test_flush_deletes_this_prefix_only(shared_redis):
    async with layer_on(RedisChannelLayer) as layer, layer_on(RedisChannelLayer) as neighbour:
        await layer.send("mine", {"type": "m"})
        await layer.group_add("mine-group", "mine")
        await neighbour.send("theirs", {"type": "t"})
        await layer.flush()
        assert shared_redis.keys(f"{layer.prefix}:*") == []
        assert shared_redis.llen(neighbour.keys.channel("theirs")) == 1


async def test_a_receive_that_waits_during_close_is_served_after_the_layer_is_used_again():
    async with layer_on(RedisChannelLayer) as layer:
        channel = await layer.new_channel()
        await layer.close()
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.05)
        await layer.send(channel, {"type": "after.close"})
        assert await asyncio.wait_for(waiting, WAIT) == {"type": "after.close"}


@pytest.mark.slow
async def test_a_receive_idle_across_several_blocking_pops_still_gets_its_message():
    async with processes_on(RedisChannelLayer) as (first, second):
        # Blocking pops of 1 s instead of the default 5 s, set before the layer opens its connections: waiting 2.5 s
        # is then more than two pops timing out and the receive loops popping again, as the default's 11 s was.
        second._settings = dataclasses.replace(second._settings, block_timeout=1.0)
        channel = await second.new_channel()
        named = asyncio.ensure_future(second.receive("idle.worker"))
        local = asyncio.ensure_future(second.receive(channel))
        await asyncio.sleep(2.5)
        assert not named.done() and not local.done()
        await first.send("idle.worker", {"type": "late"})
        await first.send(channel, {"type": "late"})
        assert await asyncio.wait_for(named, WAIT) == {"type": "late"}
        assert await asyncio.wait_for(local, WAIT) == {"type": "late"}


def test_sync_code_can_use_the_layer_through_async_to_sync_without_leaking_connections():
    layer = RedisChannelLayer(prefix=f"tether-test-sync-{threading.get_ident()}")
    try:
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("sync-group", channel)
        async_to_sync(layer.group_send)("sync-group", {"type": "from.sync"})
        assert async_to_sync(layer.receive)(channel) == {"type": "from.sync"}
        async_to_sync(layer.send)("sync.named", {"type": "named"})
        assert async_to_sync(layer.receive)("sync.named") == {"type": "named"}
    finally:
        async_to_sync(layer.flush)()
        async_to_sync(layer.close)()
