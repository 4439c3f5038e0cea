"""An attacker who can write to Redis, against an encrypting layer: frames captured from Redis and written back
re-targeted, re-labelled, with an added target, or late, and forged group members, are each refused, counted and
logged, while the legitimate messages still arrive (storage.py, "With encryption").

A process whose inbox should wait unread (so that a test can capture what is sent to it) is closed: its receive loop
stops, and its next ``receive`` starts it again. Two layer instances on one prefix stand for two processes.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio

from tests.layers.conftest import REDIS_URL, eventually
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from tether.layers.redis.storage import MEMBER_TAG, now_ms

from .conftest import layer_on, processes_on

WAIT = 5
KEYS = ["sealed-frames-test-key"]
SECRET = {"type": "private.note", "text": "for the victim only"}


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


def inbox(layer) -> str:
    return layer.keys.inbox(layer.client_id)


def with_header(frame: bytes, *, expires_at: int | None = None, group: str | None = None, targets: str | None = None):
    """``frame`` with parts of its plain header rewritten, as an attacker with write access to Redis would."""
    parts = frame.split(b"|", 3)
    if expires_at is not None:
        parts[0] = str(expires_at).encode()
    if group is not None:
        parts[1] = group.encode()
    if targets is not None:
        parts[2] = targets.encode()
    return b"|".join(parts)


def warned(caplog: pytest.LogCaptureFixture, counter: str, name: str) -> bool:
    """Whether a drop was logged at WARNING naming ``counter`` and ``name``."""
    return any(
        record.levelno == logging.WARNING and counter in record.getMessage() and repr(name) in record.getMessage()
        for record in caplog.records
    )


async def payroll_and_lobby(process) -> tuple[str, str]:
    """Two channels of ``process``: the victim's, in group "payroll", and the attacker's guest connection's, with a
    valid membership of its own in group "lobby"."""
    victim, guest = await process.new_channel(), await process.new_channel()
    await process.group_add("payroll", victim)
    await process.group_add("lobby", guest)
    return victim, guest


async def refused(layer, counter: str, count: int, name: str, caplog: pytest.LogCaptureFixture) -> None:
    """Wait until ``layer`` has counted ``count`` refusals under ``counter``; then nothing may be buffered for any of
    its channels, and the refusal must have been logged naming ``name``."""
    await eventually(lambda: layer.stats()[counter] == count)
    assert layer.stats()["local_queued"] == 0
    assert warned(caplog, counter, name)


@pytest.fixture
def warnings(caplog):
    with caplog.at_level(logging.WARNING, logger="tether.layers.redis"):
        yield caplog


# Direct sends -----------------------------------------------------------------------------------------------------


async def test_a_direct_message_copied_to_another_channel_of_the_same_process_is_refused(shared_redis, warnings):
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=KEYS) as (sender, process):
        victim, guest = await process.new_channel(), await process.new_channel()
        await process.close()
        await sender.send(victim, SECRET)
        [captured] = shared_redis.lrange(inbox(process), 0, -1)
        shared_redis.rpush(inbox(process), with_header(captured, targets=guest))

        assert await receive(process, victim) == SECRET
        await refused(process, "refused_misrouted", 1, guest, warnings)


async def test_a_direct_message_copied_to_a_channel_of_another_process_is_refused(shared_redis, warnings):
    async with processes_on(RedisChannelLayer, 3, symmetric_encryption_keys=KEYS) as (sender, process, other):
        victim, guest = await process.new_channel(), await other.new_channel()
        await process.close()
        await sender.send(victim, SECRET)
        [captured] = shared_redis.lrange(inbox(process), 0, -1)
        shared_redis.rpush(inbox(other), with_header(captured, targets=guest))

        await refused(other, "refused_misrouted", 1, guest, warnings)
        assert await receive(process, victim) == SECRET
        await sender.send(guest, {"type": "welcome"})
        assert await receive(other, guest) == {"type": "welcome"}


async def test_a_direct_message_naming_a_second_target_is_refused(shared_redis):
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=KEYS) as (sender, process):
        victim, guest = await process.new_channel(), await process.new_channel()
        await process.close()
        await sender.send(victim, SECRET)
        captured = shared_redis.lpop(inbox(process))
        shared_redis.rpush(inbox(process), with_header(captured, targets=f"{victim},{guest}"))
        await sender.send(victim, {"type": "after"})

        assert await receive(process, victim) == {"type": "after"}
        await eventually(lambda: process.stats()["refused_misrouted"] == 1)
        assert process.stats()["local_queued"] == 0


async def test_a_message_copied_from_one_named_channel_to_another_is_refused(shared_redis, warnings):
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=KEYS) as (sender, worker):
        await sender.send("payroll.jobs", SECRET)
        [captured] = shared_redis.lrange(sender.keys.channel("payroll.jobs"), 0, -1)
        shared_redis.rpush(sender.keys.channel("guest.jobs"), captured)
        await sender.send("guest.jobs", {"type": "guest.job"})

        assert await receive(worker, "guest.jobs") == {"type": "guest.job"}
        assert worker.stats()["refused_misrouted"] == 1
        assert warned(warnings, "refused_misrouted", "guest.jobs")
        assert await receive(worker, "payroll.jobs") == SECRET


# Group sends ------------------------------------------------------------------------------------------------------


async def test_a_group_message_re_labelled_with_another_group_is_refused(shared_redis, warnings):
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=KEYS) as (sender, process):
        victim, guest = await payroll_and_lobby(process)
        await process.close()
        await sender.group_send("payroll", SECRET)
        await sender.group_send("lobby", {"type": "hello"})
        payroll_frame, lobby_frame = shared_redis.lrange(inbox(process), 0, -1)
        lobby_members = lobby_frame.split(b"|", 3)[2].decode()
        shared_redis.rpush(inbox(process), with_header(payroll_frame, group="lobby", targets=lobby_members))

        assert await receive(process, guest) == {"type": "hello"}
        assert await receive(process, victim) == SECRET
        await refused(process, "refused_misrouted", 1, "lobby", warnings)


async def test_a_target_added_to_a_group_frame_is_refused_and_the_members_still_get_it(shared_redis, warnings):
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=KEYS) as (sender, process):
        victim, guest = await payroll_and_lobby(process)
        lobby_entry = process.codec.member_entry("lobby", guest)
        await process.close()
        await sender.group_send("payroll", SECRET)
        captured = shared_redis.lpop(inbox(process))
        members = captured.split(b"|", 3)[2].decode()  # "#<token>:<victim>~<tag>"
        added = f"{members},{guest},{lobby_entry}"
        shared_redis.rpush(inbox(process), with_header(captured, targets=added))

        assert await receive(process, victim) == SECRET
        await refused(process, "refused_members", 2, "payroll", warnings)


async def test_forged_members_in_the_group_sets_are_refused(shared_redis, warnings):
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=KEYS) as (sender, process):
        victim, guest = await payroll_and_lobby(process)
        now = now_ms()
        # The guest's channel, untagged and with its tag for another group, in the process's member set; a named
        # channel of the attacker's in the group's index.
        forged = {guest: now, process.codec.member_entry("lobby", guest): now}
        shared_redis.zadd(sender.keys.group_members("payroll", process.client_id), forged)
        shared_redis.hdel(sender.keys.group_tokens("payroll"), process.client_id)  # the next frame lists them
        shared_redis.zadd(sender.keys.group("payroll"), {"guest.jobs": now, "guest.jobs" + MEMBER_TAG + "A" * 16: now})

        await sender.group_send("payroll", SECRET)

        assert await receive(process, victim) == SECRET
        await eventually(lambda: process.stats()["refused_members"] == 2)
        assert process.stats()["local_queued"] == 0
        assert sender.stats()["refused_members"] == 2
        assert shared_redis.llen(sender.keys.channel("guest.jobs")) == 0
        assert warned(warnings, "refused_members", "payroll")


async def test_a_group_message_copied_from_a_named_member_to_another_named_channel_is_refused(shared_redis):
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=KEYS) as (sender, worker):
        await sender.group_add("payroll", "payroll.jobs")
        await sender.group_send("payroll", SECRET)
        [captured] = shared_redis.lrange(sender.keys.channel("payroll.jobs"), 0, -1)
        shared_redis.rpush(sender.keys.channel("guest.jobs"), captured)
        shared_redis.rpush(sender.keys.channel("guest.jobs"), with_header(captured, targets="guest.jobs"))
        await sender.send("guest.jobs", {"type": "guest.job"})

        assert await receive(worker, "guest.jobs") == {"type": "guest.job"}
        assert worker.stats()["refused_misrouted"] == 2
        assert await receive(worker, "payroll.jobs") == SECRET


# Time --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_message_replayed_after_expiry_and_the_margin_is_refused_whatever_its_header_says(
    shared_redis, warnings
):
    # The process's expiry sets its age limit; the sender's default one keeps the fresh message alive on a busy machine.
    async with (
        layer_on(RedisChannelLayer, symmetric_encryption_keys=KEYS, expiry=1) as process,
        layer_on(RedisChannelLayer, symmetric_encryption_keys=KEYS, prefix=process.prefix) as sender,
    ):
        victim = await process.new_channel()
        await process.close()
        sent_at = time.time()
        await sender.send(victim, SECRET)
        captured = shared_redis.lpop(inbox(process))
        # Fernet timestamps are whole seconds: wait until this one is past the layer's age limit (expiry + margin).
        await eventually(lambda: int(time.time()) > int(sent_at) + process.codec.max_age, timeout=10)
        waiting = asyncio.ensure_future(receive(process, victim))
        await eventually(lambda: process.stats()["local_channels"] == 1)  # receiving again, before a 1 s message
        shared_redis.rpush(inbox(process), with_header(captured, expires_at=now_ms() + 60_000))
        await sender.send(victim, {"type": "fresh"})

        assert await waiting == {"type": "fresh"}
        assert process.stats()["refused_stale"] == 1
        assert warned(warnings, "refused_stale", victim)


# Keys --------------------------------------------------------------------------------------------------------------


async def test_key_rotation_reads_old_seals_and_old_tags_and_a_new_join_replaces_the_old_tag(shared_redis):
    async with layer_on(RedisChannelLayer, symmetric_encryption_keys=["old"]) as old_sender:
        rotated = RedisChannelLayer(
            hosts=[REDIS_URL], prefix=old_sender.prefix, symmetric_encryption_keys=["new", "old"]
        )
        try:
            channel = await rotated.new_channel()
            await old_sender.group_add("room", channel)
            await old_sender.group_add("room", "room.worker")
            await old_sender.send(channel, {"type": "direct"})
            await old_sender.group_send("room", {"type": "group", "n": 1})
            assert await receive(rotated, channel) == {"type": "direct"}
            assert await receive(rotated, channel) == {"type": "group", "n": 1}
            assert await receive(rotated, "room.worker") == {"type": "group", "n": 1}

            await rotated.group_add("room", channel)
            await rotated.group_add("room", "room.worker")
            members = shared_redis.zrange(rotated.keys.group_members("room", rotated.client_id), 0, -1)
            assert members == [rotated.codec.member_entry("room", channel).encode()]
            await rotated.group_send("room", {"type": "group", "n": 2})
            assert await receive(rotated, channel) == {"type": "group", "n": 2}
            assert await receive(rotated, "room.worker") == {"type": "group", "n": 2}
            assert rotated.stats()["local_queued"] == 0  # once each, not once per form of the membership
            assert rotated.stats()["refused_members"] == rotated.stats()["refused_misrouted"] == 0

            await rotated.group_discard("room", channel)
            await rotated.group_discard("room", "room.worker")
            assert shared_redis.zrange(rotated.keys.group("room"), 0, -1) == []
        finally:
            await rotated.flush()
            await rotated.close()


async def test_members_added_without_a_tag_are_refused_until_they_join_again(shared_redis):
    async with processes_on(RedisChannelLayer, symmetric_encryption_keys=KEYS) as (sender, process):
        older = RedisChannelLayer(hosts=[REDIS_URL], prefix=sender.prefix)  # stands for a release before tags
        try:
            channel = await process.new_channel()
            await older.group_add("room", channel)
            await sender.group_send("room", {"type": "lost"})
            await eventually(lambda: process.stats()["refused_members"] == 1)

            await process.group_add("room", channel)
            await sender.group_send("room", {"type": "found"})
            assert await receive(process, channel) == {"type": "found"}
            assert len(shared_redis.zrange(sender.keys.group_members("room", process.client_id), 0, -1)) == 1
        finally:
            await older.close()


# The pub/sub layer -------------------------------------------------------------------------------------------------


async def capture(topic: str, action) -> bytes:
    """The first message published on ``topic`` while ``action()`` runs."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    subscription = client.pubsub(ignore_subscribe_messages=True)
    try:
        await subscription.subscribe(topic)
        await action()
        deadline = asyncio.get_running_loop().time() + WAIT
        while asyncio.get_running_loop().time() < deadline:
            # None for the subscription's confirmation, which ignore_subscribe_messages swallows.
            message = await subscription.get_message(timeout=WAIT)
            if message is not None:
                data: bytes = message["data"]
                return data
        raise AssertionError(f"nothing was published on {topic}")
    finally:
        await subscription.aclose()
        await client.aclose()


async def test_pubsub_frames_republished_to_another_group_or_channel_are_refused(warnings):
    async with processes_on(RedisPubSubChannelLayer, symmetric_encryption_keys=KEYS) as (sender, process):
        victim, guest = await payroll_and_lobby(process)
        group_frame = await capture(sender.keys.group("payroll"), lambda: sender.group_send("payroll", SECRET))
        direct_frame = await capture(process.keys.inbox(process.client_id), lambda: sender.send(victim, SECRET))
        assert await receive(process, victim) == SECRET
        assert await receive(process, victim) == SECRET

        publisher = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            await publisher.publish(sender.keys.group("lobby"), group_frame)
            await publisher.publish(sender.keys.group("lobby"), with_header(group_frame, group="lobby"))
            await publisher.publish(process.keys.inbox(process.client_id), with_header(direct_frame, targets=guest))
            # A group frame on a process's own topic, naming the guest: no membership tag, refused as well.
            await publisher.publish(process.keys.inbox(process.client_id), with_header(group_frame, targets=guest))
        finally:
            await publisher.aclose()

        await eventually(lambda: process.stats()["refused_misrouted"] == 3)
        await eventually(lambda: process.stats()["refused_members"] == 1)
        assert process.stats()["local_queued"] == 0
        assert warned(warnings, "refused_misrouted", "lobby")
        assert warned(warnings, "refused_misrouted", guest)
        await sender.group_send("lobby", {"type": "hello"})
        assert await receive(process, guest) == {"type": "hello"}


# Without encryption nothing changes --------------------------------------------------------------------------------


async def test_without_keys_members_and_frames_are_stored_as_before(shared_redis):
    async with layer_on(RedisChannelLayer) as layer:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        assert shared_redis.zrange(layer.keys.group_members("room", layer.client_id), 0, -1) == [channel.encode()]
        await layer.close()
        await layer.send(channel, {"type": "plain"})
        [frame] = shared_redis.lrange(inbox(layer), 0, -1)
        assert frame.split(b"|", 3)[3] == layer.codec.encode({"type": "plain"})
