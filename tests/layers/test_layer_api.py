"""The channel layer API as every backend must honour it.

Each test runs once per backend registered in ``tests/layers/conftest.py`` and assumes only the documented API:
send/receive/new_channel, groups, flush, close, names, capacity, expiry and message values. Waits are bounded.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tether.exceptions import ChannelFull

WAIT = 5  # seconds: the most any single receive in these tests may take before the test fails


async def receive(layer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), WAIT)


# Channels ---------------------------------------------------------------------------------------------------------


def test_layer_offers_the_groups_and_flush_extensions(layer):
    assert "groups" in layer.extensions
    assert "flush" in layer.extensions


async def test_send_then_receive_returns_the_message(layer):
    await layer.send("api.basic", {"type": "test.message", "text": "Ahoy"})
    assert await receive(layer, "api.basic") == {"type": "test.message", "text": "Ahoy"}


async def test_every_carriable_value_type_arrives_unchanged(layer):
    message = {
        "type": "test.values",
        "text": "h\u00e9llo",
        "bytes": b"\x00\x01\xff",
        "int": 2**40,
        "negative": -3,
        "float": 0.25,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "a", [None]],
        "dict": {"nested": {"deep": [b"x"]}},
    }
    await layer.send("api.values", message)
    received = await receive(layer, "api.values")
    assert received == message
    assert type(received["true"]) is bool
    assert type(received["int"]) is int


async def test_tuples_arrive_as_lists(layer):
    await layer.send("api.tuples", {"type": "test.tuple", "point": (1, 2), "nested": [(3,)]})
    received = await receive(layer, "api.tuples")
    assert received["point"] == [1, 2]
    assert received["nested"] == [[3]]


async def test_receive_waits_for_a_message_sent_later(layer):
    task = asyncio.ensure_future(layer.receive("api.later"))
    await asyncio.sleep(0.05)
    assert not task.done()
    await layer.send("api.later", {"type": "test.later"})
    assert await asyncio.wait_for(task, WAIT) == {"type": "test.later"}


async def test_messages_on_a_channel_arrive_in_the_order_they_were_sent(layer):
    for number in range(50):
        await layer.send("api.fifo", {"type": "test.fifo", "n": number})
    assert [(await receive(layer, "api.fifo"))["n"] for _ in range(50)] == list(range(50))


async def test_channels_are_independent(layer):
    await layer.send("api.one", {"type": "test.one"})
    await layer.send("api.two", {"type": "test.two"})
    assert await receive(layer, "api.two") == {"type": "test.two"}
    assert await receive(layer, "api.one") == {"type": "test.one"}


async def test_a_message_is_received_only_once(layer):
    await layer.send("api.once", {"type": "test.first"})
    await layer.send("api.once", {"type": "test.second"})
    assert (await receive(layer, "api.once"))["type"] == "test.first"
    assert (await receive(layer, "api.once"))["type"] == "test.second"


async def test_new_channel_names_are_valid_and_unique(layer):
    names = [await layer.new_channel() for _ in range(200)]
    assert len(set(names)) == 200
    for name in names:
        assert layer.require_valid_channel_name(name)
        assert name.startswith("specific.")
        assert "!" in name


async def test_new_channel_uses_the_given_prefix(layer):
    name = await layer.new_channel(prefix="chat")
    assert name.startswith("chat")
    assert layer.require_valid_channel_name(name)


async def test_new_channel_rejects_a_prefix_that_makes_an_invalid_name(layer):
    with pytest.raises(TypeError):
        await layer.new_channel(prefix="bad prefix")


async def test_a_new_channel_can_be_sent_to_and_received_from(layer):
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "test.specific", "n": 1})
    assert await receive(layer, channel) == {"type": "test.specific", "n": 1}


async def test_send_to_an_invalid_channel_name_raises_type_error(layer):
    with pytest.raises(TypeError, match="invalid"):
        await layer.send("not valid", {"type": "test.x"})


async def test_send_to_a_too_long_channel_name_raises_type_error_with_its_length(layer):
    with pytest.raises(TypeError, match="100 characters"):
        await layer.send("c" * 100, {"type": "test.x"})


async def test_receive_from_an_invalid_channel_name_raises_type_error(layer):
    with pytest.raises(TypeError):
        await layer.receive(b"bytes.name")


async def test_send_of_a_message_holding_a_set_raises_type_error(layer):
    with pytest.raises(TypeError):
        await layer.send("api.bad", {"type": "test.bad", "ids": {1, 2}})


async def test_send_of_a_message_that_is_not_a_dict_raises_type_error(layer):
    with pytest.raises(TypeError):
        await layer.send("api.bad", ["type", "test.bad"])


async def test_a_sent_message_is_not_changed_by_later_changes_to_the_senders_dict(layer):
    message = {"type": "test.snapshot", "items": [1, 2]}
    await layer.send("api.snapshot", message)
    message["items"].append(3)
    message["extra"] = True
    assert await receive(layer, "api.snapshot") == {"type": "test.snapshot", "items": [1, 2]}


async def test_changing_a_received_message_does_not_change_the_senders_dict(layer):
    message = {"type": "test.mine", "items": [1]}
    await layer.send("api.mine", message)
    received = await receive(layer, "api.mine")
    received["items"].append(2)
    assert message == {"type": "test.mine", "items": [1]}


async def test_a_one_megabyte_message_arrives_whole(layer):
    payload = bytes(range(256)) * (1_000_000 // 256)
    await layer.send("api.big", {"type": "test.big", "payload": payload, "text": "t" * 1000})
    received = await receive(layer, "api.big")
    assert received["payload"] == payload
    assert len(received["text"]) == 1000


# Capacity ---------------------------------------------------------------------------------------------------------


async def test_send_to_a_full_channel_raises_channel_full(layer_factory):
    async with layer_factory(capacity=2) as layer:
        await layer.send("api.full", {"type": "test.1"})
        await layer.send("api.full", {"type": "test.2"})
        with pytest.raises(ChannelFull):
            await layer.send("api.full", {"type": "test.3"})


async def test_a_full_channel_accepts_messages_again_once_one_is_received(layer_factory):
    async with layer_factory(capacity=1) as layer:
        await layer.send("api.refill", {"type": "test.1"})
        with pytest.raises(ChannelFull):
            await layer.send("api.refill", {"type": "test.2"})
        await receive(layer, "api.refill")
        await layer.send("api.refill", {"type": "test.3"})
        assert await receive(layer, "api.refill") == {"type": "test.3"}


async def test_the_message_refused_by_a_full_channel_is_not_delivered(layer_factory):
    async with layer_factory(capacity=1) as layer:
        await layer.send("api.refused", {"type": "test.kept"})
        with pytest.raises(ChannelFull):
            await layer.send("api.refused", {"type": "test.refused"})
        assert await receive(layer, "api.refused") == {"type": "test.kept"}
        await layer.send("api.refused", {"type": "test.marker"})
        assert await receive(layer, "api.refused") == {"type": "test.marker"}


async def send_until_full(layer, channel: str, limit: int = 50) -> int:
    """Send to ``channel`` until it raises ChannelFull; return how many messages it took."""
    for sent in range(limit):
        try:
            await layer.send(channel, {"type": "test.fill", "n": sent})
        except ChannelFull:
            return sent
    raise AssertionError(f"{channel} took {limit} messages without becoming full")


async def test_channel_capacity_globs_give_channels_their_own_capacity(layer_factory):
    async with layer_factory(capacity=2, channel_capacity={"api.wide.*": 5, "api.narrow.*": 1}) as layer:
        assert await send_until_full(layer, "api.wide.a") == 5
        assert await send_until_full(layer, "api.narrow.a") == 1
        assert await send_until_full(layer, "api.other") == 2


async def test_channel_capacity_accepts_compiled_regexes(layer_factory):
    async with layer_factory(capacity=1, channel_capacity={re.compile(r"^api\.rx\.\d+$"): 3}) as layer:
        assert await send_until_full(layer, "api.rx.7") == 3
        assert await send_until_full(layer, "api.rx.seven") == 1


# Groups -----------------------------------------------------------------------------------------------------------


async def test_group_send_delivers_to_every_member(layer):
    channels = ["api.member.1", "api.member.2", "api.member.3"]
    for channel in channels:
        await layer.group_add("api-room", channel)
    await layer.group_send("api-room", {"type": "test.broadcast", "text": "hi"})
    for channel in channels:
        assert await receive(layer, channel) == {"type": "test.broadcast", "text": "hi"}


async def test_group_send_reaches_a_member_created_with_new_channel(layer):
    channel = await layer.new_channel()
    await layer.group_add("api-specific", channel)
    await layer.group_send("api-specific", {"type": "test.broadcast"})
    assert await receive(layer, channel) == {"type": "test.broadcast"}


async def test_group_discard_stops_delivery_to_that_channel(layer):
    await layer.group_add("api-discard", "api.stays")
    await layer.group_add("api-discard", "api.leaves")
    await layer.group_discard("api-discard", "api.leaves")
    await layer.group_send("api-discard", {"type": "test.group"})
    await layer.send("api.leaves", {"type": "test.marker"})
    assert await receive(layer, "api.stays") == {"type": "test.group"}
    assert await receive(layer, "api.leaves") == {"type": "test.marker"}


async def test_group_discard_of_a_channel_that_is_not_a_member_is_ignored(layer):
    await layer.group_discard("api-never", "api.stranger")
    await layer.group_add("api-never", "api.member")
    await layer.group_discard("api-never", "api.stranger")
    await layer.group_send("api-never", {"type": "test.group"})
    assert await receive(layer, "api.member") == {"type": "test.group"}


async def test_adding_a_channel_twice_delivers_group_messages_once(layer):
    await layer.group_add("api-twice", "api.twice")
    await layer.group_add("api-twice", "api.twice")
    await layer.group_send("api-twice", {"type": "test.group"})
    await layer.send("api.twice", {"type": "test.marker"})
    assert await receive(layer, "api.twice") == {"type": "test.group"}
    assert await receive(layer, "api.twice") == {"type": "test.marker"}


async def test_group_send_to_a_group_without_members_does_nothing(layer):
    await layer.group_send("api-empty", {"type": "test.nobody"})


async def test_a_channel_in_two_groups_receives_from_both(layer):
    await layer.group_add("api-g1", "api.both")
    await layer.group_add("api-g2", "api.both")
    await layer.group_send("api-g1", {"type": "test.g1"})
    await layer.group_send("api-g2", {"type": "test.g2"})
    assert [(await receive(layer, "api.both"))["type"] for _ in range(2)] == ["test.g1", "test.g2"]


async def test_group_send_keeps_the_order_of_messages_per_member(layer):
    await layer.group_add("api-order", "api.ordered")
    for number in range(20):
        await layer.group_send("api-order", {"type": "test.n", "n": number})
    assert [(await receive(layer, "api.ordered"))["n"] for _ in range(20)] == list(range(20))


async def test_each_group_member_receives_its_own_copy(layer):
    await layer.group_add("api-copies", "api.copy.a")
    await layer.group_add("api-copies", "api.copy.b")
    message = {"type": "test.copy", "items": [1], "meta": {"seen": False}}
    await layer.group_send("api-copies", message)
    first = await receive(layer, "api.copy.a")
    first["items"].append(2)
    first["meta"]["seen"] = True
    assert await receive(layer, "api.copy.b") == {"type": "test.copy", "items": [1], "meta": {"seen": False}}
    assert message == {"type": "test.copy", "items": [1], "meta": {"seen": False}}


async def test_group_send_skips_a_full_member_without_raising_and_still_reaches_the_others(layer_factory):
    async with layer_factory(capacity=1) as layer:
        await layer.group_add("api-full", "api.full.member")
        await layer.group_add("api-full", "api.free.member")
        await layer.send("api.full.member", {"type": "test.filler"})
        await layer.group_send("api-full", {"type": "test.group"})
        assert await receive(layer, "api.free.member") == {"type": "test.group"}
        assert await receive(layer, "api.full.member") == {"type": "test.filler"}
        await layer.send("api.full.member", {"type": "test.marker"})
        assert await receive(layer, "api.full.member") == {"type": "test.marker"}


async def test_group_add_with_an_invalid_group_name_raises_type_error(layer):
    with pytest.raises(TypeError, match="Group name"):
        await layer.group_add("bad group", "api.channel")


async def test_group_add_with_an_invalid_channel_name_raises_type_error(layer):
    with pytest.raises(TypeError, match="Channel name"):
        await layer.group_add("api-group", "bad channel")


async def test_group_send_to_a_group_name_with_a_bang_raises_type_error(layer):
    with pytest.raises(TypeError, match="Group name"):
        await layer.group_send("api!group", {"type": "test.x"})


async def test_group_send_of_a_message_holding_an_object_raises_type_error(layer):
    await layer.group_add("api-badmsg", "api.badmsg")
    with pytest.raises(TypeError):
        await layer.group_send("api-badmsg", {"type": "test.x", "when": object()})


# Expiry -----------------------------------------------------------------------------------------------------------

#: Seconds a test waits for what had an expiry of 1 s to be past it. Every layer measures expiry exactly, in
#: milliseconds (the Redis layers on the wall clock, which a sleep's monotonic clock cannot outrun), so 0.3 s past it
#: is margin enough; a loaded machine only makes the sleep longer.
PAST_ONE_SECOND = 1.3


async def test_a_message_not_received_within_expiry_is_never_delivered(layer_factory):
    async with layer_factory(expiry=1) as layer:
        await layer.send("api.expiring", {"type": "test.stale"})
        await asyncio.sleep(PAST_ONE_SECOND)
        await layer.send("api.expiring", {"type": "test.fresh"})
        assert await receive(layer, "api.expiring") == {"type": "test.fresh"}


async def test_group_membership_ends_after_group_expiry(layer_factory):
    async with layer_factory(group_expiry=1) as layer:
        await layer.group_add("api-expiring", "api.old.member")
        await asyncio.sleep(PAST_ONE_SECOND)
        await layer.group_send("api-expiring", {"type": "test.group"})
        await layer.send("api.old.member", {"type": "test.marker"})
        assert await receive(layer, "api.old.member") == {"type": "test.marker"}


async def test_adding_a_channel_again_renews_its_group_membership(layer_factory):
    async with layer_factory(group_expiry=2) as layer:
        await layer.group_add("api-renew", "api.renewed")
        await asyncio.sleep(1.2)
        await layer.group_add("api-renew", "api.renewed")
        await asyncio.sleep(1.2)
        await layer.group_send("api-renew", {"type": "test.group"})
        assert await receive(layer, "api.renewed") == {"type": "test.group"}


# Cancellation, flush, close ---------------------------------------------------------------------------------------


async def test_a_receive_cancelled_while_waiting_does_not_lose_the_next_message(layer):
    waiting = asyncio.ensure_future(layer.receive("api.cancel"))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await layer.send("api.cancel", {"type": "test.after"})
    assert await receive(layer, "api.cancel") == {"type": "test.after"}


async def test_a_receive_that_timed_out_does_not_lose_the_next_message(layer):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive("api.timeout"), 0.05)
    await layer.send("api.timeout", {"type": "test.after"})
    assert await receive(layer, "api.timeout") == {"type": "test.after"}


async def test_flush_drops_queued_messages(layer):
    await layer.send("api.flushed", {"type": "test.gone"})
    await layer.flush()
    await layer.send("api.flushed", {"type": "test.marker"})
    assert await receive(layer, "api.flushed") == {"type": "test.marker"}


async def test_flush_drops_groups(layer):
    await layer.group_add("api-flushed", "api.flushed.member")
    await layer.flush()
    await layer.group_send("api-flushed", {"type": "test.gone"})
    await layer.send("api.flushed.member", {"type": "test.marker"})
    assert await receive(layer, "api.flushed.member") == {"type": "test.marker"}


async def test_a_layer_can_be_used_again_after_close(layer):
    await layer.send("api.closed", {"type": "test.before"})
    assert await receive(layer, "api.closed") == {"type": "test.before"}
    await layer.close()
    await layer.send("api.closed", {"type": "test.after"})
    assert await receive(layer, "api.closed") == {"type": "test.after"}


# Concurrency ------------------------------------------------------------------------------------------------------


async def test_concurrent_senders_and_receivers_deliver_every_message_once_in_order_per_sender(layer_factory):
    senders, per_sender, channels = 20, 50, [f"api.conc.{index}" for index in range(5)]
    expected_per_channel = senders * per_sender // len(channels)

    async def sender(sender_id: int) -> None:
        for number in range(per_sender):
            channel = channels[number % len(channels)]
            await layer.send(channel, {"type": "test.conc", "sender": sender_id, "n": number})
            await asyncio.sleep(0)

    async def receiver(channel: str) -> list[tuple[int, int]]:
        got = []
        for _ in range(expected_per_channel):
            message = await layer.receive(channel)
            got.append((message["sender"], message["n"]))
        return got

    async with layer_factory(capacity=senders * per_sender) as layer:
        receiving = [asyncio.ensure_future(receiver(channel)) for channel in channels]
        await asyncio.wait_for(asyncio.gather(*(sender(index) for index in range(senders))), 30)
        results = await asyncio.wait_for(asyncio.gather(*receiving), 30)

    everything = [item for got in results for item in got]
    assert len(everything) == senders * per_sender
    assert set(everything) == {(s, n) for s in range(senders) for n in range(per_sender)}
    for channel_index, got in enumerate(results):
        for sender_id in range(senders):
            numbers = [n for s, n in got if s == sender_id]
            assert numbers == [n for n in range(per_sender) if n % len(channels) == channel_index]
