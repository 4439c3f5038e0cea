"""Presence as every layer must offer it (``tether.presence``): one test file run against each backend.

Two trackers on one layer stand for one process; the Redis-only behaviour (several processes, a killed process, a
pause shorter than the ttl) is in tests/presence. Waits are bounded: events are awaited, never timed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tether.presence import Presence, PresenceCount, events_group, get_presence

WAIT = 10


@pytest.fixture
async def presence(layer) -> AsyncIterator[Presence]:
    tracker = get_presence(layer, batch_window=0.02, ttl=4, heartbeat=1)
    yield tracker
    await tracker.close()


async def next_event(layer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def test_a_joined_channel_is_listed_with_its_user_and_metadata(layer, presence):
    channel = await layer.new_channel()
    assert await presence.join("room.1", channel, user=42, meta={"name": "Ada", "device": "phone"})
    [member] = await presence.members("room.1")
    assert member.user == "42"
    assert member.meta == {"name": "Ada", "device": "phone"}
    assert [connection.channel for connection in member.connections] == [channel]
    assert await presence.count("room.1") == PresenceCount(users=1, connections=1)


async def test_three_tabs_of_one_user_are_one_member_with_three_connections(layer, presence):
    tabs = [await layer.new_channel() for _ in range(3)]
    other = await layer.new_channel()
    for number, tab in enumerate(tabs):
        await presence.join("room.tabs", tab, user="ada", meta={"tab": number}, listen=False)
    await presence.join("room.tabs", other, user="bob", listen=False)
    members = {member.user: member for member in await presence.members("room.tabs")}
    assert sorted(members) == ["ada", "bob"]
    assert sorted(connection.channel for connection in members["ada"].connections) == sorted(tabs)
    assert await presence.count("room.tabs") == PresenceCount(users=2, connections=4)


async def test_an_anonymous_connection_is_a_person_of_its_own(layer, presence):
    first, second = await layer.new_channel(), await layer.new_channel()
    await presence.join("room.anon", first, listen=False)
    await presence.join("room.anon", second, listen=False)
    assert await presence.count("room.anon") == PresenceCount(users=2, connections=2)


async def test_leave_removes_the_connection_and_says_whether_it_was_there(layer, presence):
    channel = await layer.new_channel()
    await presence.join("room.leave", channel, user=1, listen=False)
    assert await presence.leave("room.leave", channel)
    assert not await presence.leave("room.leave", channel)
    assert await presence.members("room.leave") == []
    assert await presence.count("room.leave") == PresenceCount(0, 0)


async def test_joining_again_replaces_the_metadata_without_a_second_join_event(layer, presence):
    channel = await layer.new_channel()
    assert await presence.join("room.again", channel, user=1, meta={"status": "here"})
    assert not await presence.join("room.again", channel, user=1, meta={"status": "away"})
    [member] = await presence.members("room.again")
    assert member.meta == {"status": "away"}
    event = await next_event(layer, channel)
    assert event["type"] == "presence.join"
    assert len(event["members"]) == 1


async def test_groups_are_independent(layer, presence):
    channel = await layer.new_channel()
    await presence.join("room.a", channel, user=1, listen=False)
    assert await presence.count("room.b") == PresenceCount(0, 0)


async def test_listeners_get_join_and_leave_events_with_the_members(layer, presence):
    watcher = await layer.new_channel()
    await presence.join("room.events", watcher, user="watcher")
    assert (await next_event(layer, watcher))["members"] == [{"channel": watcher, "user": "watcher", "meta": {}}]
    comer = await layer.new_channel()
    await presence.join("room.events", comer, user="ada", meta={"name": "Ada"}, listen=False)
    assert await next_event(layer, watcher) == {
        "type": "presence.join",
        "group": "room.events",
        "members": [{"channel": comer, "user": "ada", "meta": {"name": "Ada"}}],
    }
    await presence.leave("room.events", comer)
    assert await next_event(layer, watcher) == {
        "type": "presence.leave",
        "group": "room.events",
        "members": [{"channel": comer, "user": "ada", "meta": {"name": "Ada"}}],
    }


async def test_many_joins_at_once_come_as_one_batched_event(layer):
    presence = get_presence(layer, batch_window=5, ttl=20, heartbeat=5)  # only flush_events() sends
    try:
        watcher = await layer.new_channel()
        await layer.group_add(events_group("room.crowd"), watcher)
        crowd = [await layer.new_channel() for _ in range(300)]
        await asyncio.gather(*(presence.join("room.crowd", c, user=n, listen=False) for n, c in enumerate(crowd)))
        await presence.flush_events()
        event = await next_event(layer, watcher)
        assert event["type"] == "presence.join"
        assert sorted(entry["channel"] for entry in event["members"]) == sorted(crowd)
        await asyncio.gather(*(presence.leave("room.crowd", channel) for channel in crowd))
        await presence.flush_events()
        event = await next_event(layer, watcher)
        assert event["type"] == "presence.leave"
        assert len(event["members"]) == 300
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(watcher), 0.3)  # nothing else: one event each way
    finally:
        await presence.close()


async def test_a_join_and_leave_within_one_window_announce_nothing(layer):
    presence = get_presence(layer, batch_window=5, ttl=20, heartbeat=5)  # only flush_events() sends
    try:
        watcher = await layer.new_channel()
        await layer.group_add(events_group("room.blink"), watcher)
        channel = await layer.new_channel()
        await presence.join("room.blink", channel, listen=False)
        await presence.leave("room.blink", channel)
        await presence.flush_events()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(watcher), 0.3)
    finally:
        await presence.close()


async def test_close_leaves_every_group_joined_here(layer):
    tracker = get_presence(layer, batch_window=0.02, ttl=4, heartbeat=1)
    channel = await layer.new_channel()
    await tracker.join("room.close", channel, user=1, listen=False)
    await tracker.close()
    assert await tracker.members("room.close") == []
    await tracker.close()


# Bad input ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"meta": {"blob": "x" * 5000}}, ValueError, "max_metadata_size"),
        ({"meta": {"when": object()}}, TypeError, "JSON-serialisable"),
        ({"meta": {"ids": {1, 2}}}, TypeError, "JSON-serialisable"),
        ({"meta": ["not", "a", "dict"]}, TypeError, "must be a dict"),
        ({"meta": {"x": float("nan")}}, TypeError, "JSON-serialisable"),
        ({"user": 1.5}, TypeError, "str or an int"),
        ({"user": ""}, ValueError, "user id"),
    ],
)
async def test_bad_metadata_or_user_is_refused_and_leaves_nothing_behind(layer, presence, kwargs, error, match):
    channel = await layer.new_channel()
    with pytest.raises(error, match=match):
        await presence.join("room.bad", channel, **kwargs)
    assert await presence.members("room.bad") == []
    await layer.group_send(events_group("room.bad"), {"type": "probe"})
    with contextlib.suppress(asyncio.TimeoutError):
        assert await asyncio.wait_for(layer.receive(channel), 0.3) is None, "the refused channel joined the events"


@pytest.mark.parametrize("group", ["bad name", "", "g" * 95, b"bytes"])
async def test_an_invalid_group_name_is_refused(layer, presence, group):
    channel = await layer.new_channel()
    with pytest.raises(TypeError, match="name"):
        await presence.join(group, channel)


async def test_an_invalid_channel_name_is_refused(presence):
    with pytest.raises(TypeError, match="invalid"):
        await presence.join("room.x", "not valid")


def test_bad_options_are_refused_with_the_option_named(layer):
    with pytest.raises(ValueError, match="heartbeat"):
        get_presence(layer, ttl=2, heartbeat=5)
    with pytest.raises(ValueError, match="ttl"):
        get_presence(layer, ttl=-1)


def test_a_layer_s_presence_cannot_be_made_again_with_other_options(layer):
    tracker = get_presence(layer, ttl=4, heartbeat=1)
    assert get_presence(layer) is tracker
    assert get_presence(layer, ttl=4) is tracker
    with pytest.raises(ValueError, match="TETHER_PRESENCE"):
        get_presence(layer, ttl=8)
