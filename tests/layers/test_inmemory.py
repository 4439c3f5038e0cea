"""What only the in-memory layer promises: its counters and logs, cleanup, direct delivery, and use across threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from asgiref.sync import async_to_sync

from tests.layers.conftest import eventually
from tether.exceptions import ChannelFull
from tether.layers import InMemoryChannelLayer

WAIT = 5
LOGGER = "tether.layers.inmemory"


@pytest.fixture
async def layer():
    built = InMemoryChannelLayer()
    yield built
    await built.flush()


async def receive(layer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), WAIT)


# Options ------------------------------------------------------------------------------------------------------------


def test_defaults_match_channels():
    layer = InMemoryChannelLayer()
    assert (layer.expiry, layer.group_expiry, layer.capacity) == (60, 86400, 100)


def test_unknown_option_is_rejected_naming_it_and_the_known_ones():
    with pytest.raises(TypeError, match=r"unknown CONFIG option\(s\) \['hosts'\]; it takes expiry, group_expiry"):
        InMemoryChannelLayer(hosts=["redis://localhost"])


@pytest.mark.parametrize("group_expiry", [0, -1, "60", None])
def test_group_expiry_must_be_a_positive_number(group_expiry):
    with pytest.raises(ValueError, match="group_expiry must be a positive number of seconds"):
        InMemoryChannelLayer(group_expiry=group_expiry)


async def test_new_channel_names_say_they_belong_to_the_in_memory_layer(layer):
    name = await layer.new_channel()
    assert name.startswith("specific.inmemory!")


# Counters -----------------------------------------------------------------------------------------------------------


def test_stats_start_at_zero(layer):
    assert set(layer.stats().values()) == {0}
    assert {"sent", "received", "group_full_drops", "expired", "channels", "groups"} <= set(layer.stats())


async def test_stats_count_sent_and_received_messages(layer):
    await layer.send("c", {"type": "m"})
    await layer.send("c", {"type": "m"})
    await receive(layer, "c")
    assert (layer.stats()["sent"], layer.stats()["received"]) == (2, 1)


async def test_stats_count_group_sends_and_the_deliveries_they_made(layer):
    for channel in ("a", "b", "c"):
        await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "m"})
    stats = layer.stats()
    assert (stats["group_sent"], stats["group_delivered"]) == (1, 3)


async def test_group_send_drop_on_a_full_channel_is_counted_and_logged_once_per_channel(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    layer = InMemoryChannelLayer(capacity=1, channel_capacity={"free": 10})
    for channel in ("full.one", "full.two", "free"):
        await layer.group_add("room", channel)
    await layer.send("full.one", {"type": "filler"})
    await layer.send("full.two", {"type": "filler"})
    for _ in range(3):
        await layer.group_send("room", {"type": "broadcast"})
    assert layer.stats()["group_full_drops"] == 6
    assert layer.stats()["group_delivered"] == 3
    warnings = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert len(warnings) == 2
    assert any("'full.one'" in text and "'room'" in text for text in warnings)
    assert any("'full.two'" in text for text in warnings)
    assert all("group_full_drops" in text for text in warnings)


async def test_group_send_drop_is_not_logged_for_a_member_that_had_room(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    layer = InMemoryChannelLayer(capacity=1)
    await layer.group_add("room", "free")
    await layer.group_send("room", {"type": "broadcast"})
    assert layer.stats()["group_full_drops"] == 0
    assert caplog.records == []


async def test_expired_message_is_counted_and_logged_once_with_its_channel(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    layer = InMemoryChannelLayer(expiry=0.2)
    for number in range(3):
        await layer.send("stale.channel", {"type": "old", "n": number})
    await asyncio.sleep(0.3)
    await layer.send("stale.channel", {"type": "fresh"})
    assert await receive(layer, "stale.channel") == {"type": "fresh"}
    assert layer.stats()["expired"] == 3
    [warning] = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert "'stale.channel'" in warning and "expired unread" in warning


async def test_group_membership_that_expired_is_counted_and_its_group_removed():
    layer = InMemoryChannelLayer(group_expiry=0.2)
    await layer.group_add("g", "old.member")
    await asyncio.sleep(0.3)
    await layer.group_send("g", {"type": "m"})
    stats = layer.stats()
    assert stats["group_members_expired"] == 1
    assert stats["groups"] == 0
    assert stats["group_delivered"] == 0


# Expiry -----------------------------------------------------------------------------------------------------------


async def layer_with_an_expired_message() -> InMemoryChannelLayer:
    """A layer whose group "g" has "gone.consumer", holding a message that has expired, and "live.consumer"."""
    layer = InMemoryChannelLayer(expiry=0.2)
    await layer.group_add("g", "gone.consumer")
    await layer.group_add("g", "live.consumer")
    await layer.send("gone.consumer", {"type": "unread"})
    await asyncio.sleep(0.3)
    return layer


async def test_a_channel_whose_message_expired_is_taken_out_of_its_groups():
    layer = await layer_with_an_expired_message()
    await layer.send("gone.consumer", {"type": "marker"})
    assert await receive(layer, "gone.consumer") == {"type": "marker"}
    await layer.group_send("g", {"type": "broadcast"})
    assert layer.stats()["group_delivered"] == 1
    assert await receive(layer, "live.consumer") == {"type": "broadcast"}


async def test_a_full_channel_whose_messages_expired_accepts_new_messages():
    layer = InMemoryChannelLayer(capacity=1, expiry=0.4)
    await layer.send("c", {"type": "old"})
    with pytest.raises(ChannelFull):
        await layer.send("c", {"type": "refused"})
    await asyncio.sleep(0.3)
    await layer.send("other", {"type": "m"})  # the layer's periodic sweep runs now, before "old" expired
    await asyncio.sleep(0.15)
    await layer.send("c", {"type": "new"})  # "old" has expired, though no sweep has run since
    assert await receive(layer, "c") == {"type": "new"}


async def test_expired_messages_of_channels_nobody_reads_are_swept_away():
    layer = InMemoryChannelLayer(expiry=0.2)
    await layer.send("abandoned", {"type": "unread"})
    await asyncio.sleep(0.3)
    await layer.send("other", {"type": "m"})
    assert layer.stats()["expired"] == 1
    await receive(layer, "other")
    assert layer.stats()["channels"] == 0


# Cleanup -----------------------------------------------------------------------------------------------------------


async def test_a_drained_channel_is_removed(layer):
    await layer.send("c", {"type": "m"})
    assert layer.stats()["channels"] == 1
    await receive(layer, "c")
    assert layer.stats()["channels"] == 0


async def test_a_channel_whose_waiting_receiver_got_its_message_is_removed(layer):
    waiting = asyncio.ensure_future(layer.receive("c"))
    await asyncio.sleep(0)
    await layer.send("c", {"type": "m"})
    await asyncio.wait_for(waiting, WAIT)
    assert layer.stats()["channels"] == 0


async def test_a_cancelled_receive_leaves_no_channel_behind(layer):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive("c"), 0.01)
    assert layer.stats()["channels"] == 0


async def test_a_group_is_removed_when_its_last_member_leaves(layer):
    await layer.group_add("g", "a")
    await layer.group_add("g", "b")
    await layer.group_discard("g", "a")
    assert layer.stats()["groups"] == 1
    await layer.group_discard("g", "b")
    assert layer.stats()["groups"] == 0


async def test_flush_empties_the_layer_and_resets_its_counters(layer):
    await layer.send("c", {"type": "m"})
    await layer.group_add("g", "c")
    await layer.flush()
    assert set(layer.stats().values()) == {0}


async def test_a_receiver_waiting_during_flush_gets_later_messages(layer):
    waiting = asyncio.ensure_future(layer.receive("c"))
    await asyncio.sleep(0)
    await layer.flush()
    await layer.send("c", {"type": "after.flush"})
    assert await asyncio.wait_for(waiting, WAIT) == {"type": "after.flush"}


# Direct delivery and copies ----------------------------------------------------------------------------------------


async def test_a_waiting_receiver_gets_a_copy_not_the_senders_dict(layer):
    waiting = asyncio.ensure_future(layer.receive("c"))
    await asyncio.sleep(0)
    message = {"type": "m", "items": [1]}
    await layer.send("c", message)
    message["items"].append(2)
    assert await asyncio.wait_for(waiting, WAIT) == {"type": "m", "items": [1]}


async def test_waiting_group_members_each_get_their_own_copy(layer):
    await layer.group_add("g", "a")
    await layer.group_add("g", "b")
    first = asyncio.ensure_future(layer.receive("a"))
    second = asyncio.ensure_future(layer.receive("b"))
    await asyncio.sleep(0)
    await layer.group_send("g", {"type": "m", "items": [1]})
    (await asyncio.wait_for(first, WAIT))["items"].append("changed")
    assert await asyncio.wait_for(second, WAIT) == {"type": "m", "items": [1]}


async def test_a_message_holding_a_set_is_rejected_naming_its_place(layer):
    with pytest.raises(TypeError, match=r"message\['ids'\] is set"):
        await layer.send("c", {"type": "m", "ids": {1}})


async def test_a_message_with_a_non_str_key_is_rejected_naming_its_place(layer):
    with pytest.raises(TypeError, match=r"message\['scores'\] has key 7"):
        await layer.group_send("g", {"type": "m", "scores": {7: "x"}})


async def test_group_send_to_1000_members_delivers_to_all_without_starting_a_task_per_member(layer):
    channels = [f"member.{index}" for index in range(1000)]
    for channel in channels:
        await layer.group_add("crowd", channel)
    tasks_before = len(asyncio.all_tasks())
    await layer.group_send("crowd", {"type": "broadcast"})
    assert len(asyncio.all_tasks()) <= tasks_before
    assert layer.stats()["group_delivered"] == 1000
    for channel in channels:
        assert await receive(layer, channel) == {"type": "broadcast"}


async def test_group_send_wakes_1000_waiting_receivers_without_starting_a_task_per_member(layer):
    channels = [f"member.{index}" for index in range(1000)]
    for channel in channels:
        await layer.group_add("crowd", channel)
    receivers = [asyncio.ensure_future(layer.receive(channel)) for channel in channels]
    await asyncio.sleep(0)
    tasks_before = len(asyncio.all_tasks())
    await layer.group_send("crowd", {"type": "broadcast"})
    assert len(asyncio.all_tasks()) <= tasks_before
    results = await asyncio.wait_for(asyncio.gather(*receivers), WAIT)
    assert results == [{"type": "broadcast"}] * 1000
    assert layer.stats()["channels"] == 0


async def test_a_message_handed_to_a_receive_cancelled_at_that_moment_goes_to_the_next_receive(layer):
    waiting = asyncio.ensure_future(layer.receive("c"))
    await asyncio.sleep(0)
    await layer.send("c", {"type": "first"})  # handed straight to the waiting receive
    await layer.send("c", {"type": "second"})
    waiting.cancel()  # ... which is cancelled before it could return it
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await receive(layer, "c") == {"type": "first"}
    assert await receive(layer, "c") == {"type": "second"}


async def test_several_receivers_on_one_channel_share_its_messages_each_received_once(layer):
    async def drain(got: list[int]) -> None:
        while True:
            got.append((await layer.receive("shared"))["n"])

    buckets: list[list[int]] = [[] for _ in range(5)]
    receivers = [asyncio.ensure_future(drain(bucket)) for bucket in buckets]
    await asyncio.sleep(0)
    for number in range(500):
        await layer.send("shared", {"type": "m", "n": number})
        if number % 7 == 0:
            await asyncio.sleep(0)
    await eventually(lambda: sum(map(len, buckets)) == 500)
    for receiver in receivers:
        receiver.cancel()
    await asyncio.gather(*receivers, return_exceptions=True)
    assert sorted(n for bucket in buckets for n in bucket) == list(range(500))
    assert all(bucket == sorted(bucket) for bucket in buckets)
    assert layer.stats()["channels"] == 0


# Threads ------------------------------------------------------------------------------------------------------------


async def test_send_from_sync_code_in_another_thread_wakes_a_receiver_waiting_in_this_loop(layer):
    waiting = asyncio.ensure_future(layer.receive("c"))
    await asyncio.sleep(0)

    def sync_code() -> None:
        async_to_sync(layer.send)("c", {"type": "from.thread"})

    await asyncio.wait_for(asyncio.to_thread(sync_code), WAIT)
    assert await asyncio.wait_for(waiting, WAIT) == {"type": "from.thread"}


async def test_group_send_from_sync_code_in_another_thread_reaches_waiting_members(layer):
    await layer.group_add("g", "a")
    await layer.group_add("g", "b")
    receivers = [asyncio.ensure_future(layer.receive(channel)) for channel in ("a", "b")]
    await asyncio.sleep(0)

    def sync_code() -> None:
        async_to_sync(layer.group_send)("g", {"type": "from.thread"})

    await asyncio.wait_for(asyncio.to_thread(sync_code), WAIT)
    assert await asyncio.wait_for(asyncio.gather(*receivers), WAIT) == [{"type": "from.thread"}] * 2


async def test_a_receiver_in_another_thread_gets_a_message_sent_from_this_loop(layer):
    async def bounded_receive() -> dict:
        return await asyncio.wait_for(layer.receive("c"), WAIT)

    received = asyncio.ensure_future(asyncio.to_thread(async_to_sync(bounded_receive)))
    await eventually(lambda: layer.stats()["channels"] == 1)
    await layer.send("c", {"type": "to.thread"})
    assert await asyncio.wait_for(received, WAIT) == {"type": "to.thread"}


# Inspection, as in Channels ----------------------------------------------------------------------------------------


async def test_a_sent_message_is_visible_in_channels_with_its_expiry(layer):
    before = time.time()
    await layer.send("c", {"type": "m", "n": 1})
    assert list(layer.channels) == ["c"]
    assert layer.channels["c"].qsize() == 1
    expires_at, message = layer.channels["c"].get_nowait()
    assert message == {"type": "m", "n": 1}
    assert before + layer.expiry <= expires_at <= time.time() + layer.expiry


async def test_a_received_message_is_gone_from_channels(layer):
    await layer.send("c", {"type": "m"})
    await receive(layer, "c")
    assert "c" not in layer.channels
    assert len(layer.channels) == 0


async def test_a_channel_view_follows_the_layer_after_it_was_taken(layer):
    await layer.send("c", {"type": "m"})
    await layer.send("c", {"type": "m"})
    queue = layer.channels["c"]
    await receive(layer, "c")
    assert queue.qsize() == 1
    await receive(layer, "c")
    assert queue.empty()


async def test_get_nowait_takes_the_message_as_a_receive_would(layer):
    await layer.send("c", {"type": "first"})
    await layer.send("c", {"type": "second"})
    assert layer.channels["c"].get_nowait()[1] == {"type": "first"}
    assert await receive(layer, "c") == {"type": "second"}
    assert layer.stats()["received"] == 2


async def test_get_nowait_on_a_drained_channel_raises_queue_empty(layer):
    await layer.send("c", {"type": "m"})
    queue = layer.channels["c"]
    queue.get_nowait()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_channel_with_a_waiting_receiver_is_listed_with_an_empty_queue(layer):
    waiting = asyncio.ensure_future(layer.receive("c"))
    await asyncio.sleep(0)
    assert layer.channels["c"].empty()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert "c" not in layer.channels


async def test_a_channel_queue_reports_its_capacity_as_maxsize():
    layer = InMemoryChannelLayer(capacity=2, channel_capacity={"big.*": 5})
    await layer.send("small", {"type": "m"})
    await layer.send("small", {"type": "m"})
    await layer.send("big.one", {"type": "m"})
    assert (layer.channels["small"].maxsize, layer.channels["small"].full()) == (2, True)
    assert (layer.channels["big.one"].maxsize, layer.channels["big.one"].full()) == (5, False)


async def test_an_expired_message_is_gone_from_channels():
    layer = InMemoryChannelLayer(expiry=0.2)
    await layer.send("c", {"type": "unread"})
    await asyncio.sleep(0.3)
    assert "c" not in layer.channels
    assert layer.stats()["expired"] == 1


async def test_flush_empties_channels_and_groups(layer):
    await layer.send("c", {"type": "m"})
    await layer.group_add("g", "c")
    await layer.flush()
    assert (dict(layer.channels), dict(layer.groups)) == ({}, {})


async def test_group_add_is_visible_in_groups_with_its_join_time(layer):
    before = time.time()
    await layer.group_add("g", "a")
    await layer.group_add("g", "b")
    assert set(layer.groups) == {"g"}
    assert set(layer.groups["g"]) == {"a", "b"}
    assert before <= layer.groups["g"]["a"] <= layer.groups["g"]["b"] <= time.time()


async def test_group_discard_is_gone_from_groups(layer):
    await layer.group_add("g", "a")
    await layer.group_add("g", "b")
    await layer.group_discard("g", "a")
    assert dict(layer.groups["g"]).keys() == {"b"}
    await layer.group_discard("g", "b")
    assert "g" not in layer.groups


async def test_an_expired_membership_is_gone_from_groups():
    layer = InMemoryChannelLayer(group_expiry=0.2)
    await layer.group_add("g", "old")
    await asyncio.sleep(0.3)
    await layer.group_add("g", "new")
    assert list(layer.groups["g"]) == ["new"]


async def test_a_channel_whose_message_expired_is_gone_from_groups():
    layer = await layer_with_an_expired_message()
    assert list(layer.groups["g"]) == ["live.consumer"]


async def test_changing_channels_is_refused_naming_the_layer_call_to_use(layer):
    await layer.send("c", {"type": "m"})
    with pytest.raises(TypeError, match=r"read-only view .* 'await layer\.send\(channel, message\)'"):
        del layer.channels["c"]
    with pytest.raises(TypeError, match=r"read-only view .* 'await layer\.send\('c', message\)'"):
        layer.channels["c"].put_nowait({"type": "m"})
    with pytest.raises(AttributeError, match=r"read-only view .* 'await layer\.flush\(\)'"):
        layer.channels = {}


async def test_changing_groups_is_refused_naming_the_layer_call_to_use(layer):
    await layer.group_add("g", "a")
    with pytest.raises(TypeError, match=r"read-only view .* 'await layer\.group_discard\(group, channel\)'"):
        layer.groups["g"].pop("a")
    with pytest.raises(TypeError, match=r"read-only view .* 'await layer\.group_add\(group, channel\)'"):
        layer.groups["other"] = {"a": time.time()}


async def test_clean_expired_drops_expired_messages_at_once():
    layer = InMemoryChannelLayer(expiry=0.2)
    await layer.send("c", {"type": "unread"})
    await asyncio.sleep(0.3)
    layer._clean_expired()
    assert layer.stats()["expired"] == 1


async def test_wrapping_clean_expired_and_remove_from_groups_as_channels_graphql_ws_does_breaks_nothing(monkeypatch):
    guard = threading.RLock()

    def locked(method):
        def wrapper(*args, **kwargs):
            with guard:
                return method(*args, **kwargs)

        return wrapper

    for name in ("_clean_expired", "_remove_from_groups"):
        monkeypatch.setattr(InMemoryChannelLayer, name, locked(getattr(InMemoryChannelLayer, name)))
    layer = await layer_with_an_expired_message()
    layer._clean_expired()
    await layer.group_send("g", {"type": "broadcast"})
    assert await receive(layer, "live.consumer") == {"type": "broadcast"}
    assert "gone.consumer" not in layer.groups["g"]


async def test_replacing_clean_expired_with_a_no_op_breaks_nothing(monkeypatch):
    monkeypatch.setattr(InMemoryChannelLayer, "_clean_expired", lambda self: None)
    layer = InMemoryChannelLayer()
    await layer.group_add("g", "a")
    await layer.group_send("g", {"type": "broadcast"})
    assert await receive(layer, "a") == {"type": "broadcast"}
