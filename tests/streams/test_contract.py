"""The streams contract, on every layer with a streams backend (the ``streams_layer`` fixture)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tether.layers.base import BaseChannelLayer
from tether.streams import Position, Recovery, StreamEntry, get_streams

WAIT = 10


async def receive(layer: BaseChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def test_offsets_start_at_one_and_grow_by_one(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    first = await streams.publish("chat.lobby", {"n": 1})
    second = await streams.publish("chat.lobby", {"n": 2})
    assert (first.offset, second.offset) == (1, 2)
    assert first.epoch == second.epoch
    assert await streams.position("chat.lobby") == second


async def test_each_stream_has_its_own_offsets_and_epoch(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    await streams.publish("a", 1)
    other = await streams.publish("b", 1)
    assert other.offset == 1
    assert (await streams.position("a")).epoch != other.epoch


async def test_a_stream_without_messages_is_at_offset_zero_with_a_stable_epoch(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    position = await streams.position("quiet")
    assert position.offset == 0 and isinstance(position.epoch, str) and position.epoch
    assert await streams.position("quiet") == position
    assert (await streams.publish("quiet", "x")) == Position(position.epoch, 1)


async def test_a_subscriber_receives_the_stream_message(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    channel = await streams_layer.new_channel()
    await streams.subscribe("chat.lobby", channel)
    position = await streams.publish("chat.lobby", {"text": "hi"})
    message = await receive(streams_layer, channel)
    assert message == {
        "type": "stream.message",
        "stream": "chat.lobby",
        "epoch": position.epoch,
        "offset": 1,
        "data": {"text": "hi"},
    }


async def test_an_unsubscribed_channel_receives_nothing_more(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    gone, staying = await streams_layer.new_channel(), await streams_layer.new_channel()
    await streams.subscribe("s", gone)
    await streams.subscribe("s", staying)
    await streams.unsubscribe("s", gone)
    await streams.publish("s", 1)
    assert (await receive(streams_layer, staying))["offset"] == 1
    await asyncio.sleep(0.05)  # not a synchronisation: nothing may arrive; the other channel's message came already
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(streams_layer.receive(gone), 0.2)


async def test_recover_returns_everything_after_the_offset_in_order(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    for n in range(1, 6):
        top = await streams.publish("s", {"n": n})
    recovery = await streams.recover("s", top.epoch, 2)
    assert recovery == Recovery(top, [StreamEntry(n, {"n": n}) for n in (3, 4, 5)], None)
    assert recovery.complete


async def test_recover_at_the_top_is_complete_and_empty(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    top = await streams.publish("s", 1)
    assert await streams.recover("s", top.epoch, 1) == Recovery(top, [], None)


async def test_recover_from_offset_zero_of_a_new_stream_gives_all(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    start = await streams.position("s")
    await streams.publish("s", "a")
    top = await streams.publish("s", "b")
    recovery = await streams.recover("s", start.epoch, 0)
    assert recovery.entries == [StreamEntry(1, "a"), StreamEntry(2, "b")] and recovery.position == top


async def test_recover_with_another_epoch_says_reload_epoch(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    top = await streams.publish("s", 1)
    assert await streams.recover("s", "not-the-epoch", 0) == Recovery(top, [], "epoch")


async def test_recover_with_another_streams_epoch_says_reload_epoch(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    other = await streams.publish("other", 1)
    top = await streams.publish("s", 1)
    assert (await streams.recover("s", other.epoch, 0)).reload == "epoch"
    assert (await streams.recover("s", top.epoch, 0)).reload is None


async def test_recover_past_the_last_offset_says_reload_future(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    top = await streams.publish("s", 1)
    assert await streams.recover("s", top.epoch, 2) == Recovery(top, [], "future")


async def test_recover_before_the_kept_history_says_reload_trimmed(streams_layer_factory: Any) -> None:
    async with streams_layer_factory() as layer:
        streams = get_streams(layer, config={"short.*": {"max_length": 3}})
        for n in range(5):
            top = await streams.publish("short.s", n)
        assert await streams.recover("short.s", top.epoch, 1) == Recovery(top, [], "trimmed")
        kept = await streams.recover("short.s", top.epoch, 2)
        assert [entry.offset for entry in kept.entries] == [3, 4, 5]


async def test_more_missed_than_the_limit_says_reload_trimmed(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    for n in range(5):
        top = await streams.publish("s", n)
    assert (await streams.recover("s", top.epoch, 0, limit=4)).reload == "trimmed"
    assert len((await streams.recover("s", top.epoch, 0, limit=5)).entries) == 5


async def test_flush_starts_a_new_epoch(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    before = await streams.publish("s", 1)
    await streams_layer.flush()
    after = await streams.publish("s", 2)
    assert after.offset == 1 and after.epoch != before.epoch
    assert (await streams.recover("s", before.epoch, 1)).reload == "epoch"


async def test_a_thousand_missed_messages_are_recovered_in_order_once(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    seen = await streams.position("room")
    for n in range(1, 1001):
        await streams.publish("room", {"n": n})
    recovery = await streams.recover("room", seen.epoch, seen.offset)
    assert recovery.reload is None
    assert [entry.data["n"] for entry in recovery.entries] == list(range(1, 1001))
    assert [entry.offset for entry in recovery.entries] == list(range(1, 1001))


async def test_subscribe_then_recover_then_drop_duplicates_misses_nothing(streams_layer: BaseChannelLayer) -> None:
    """The documented recipe, with publishes running while the subscriber subscribes and recovers (fewer than a
    channel's capacity, which the subscriber does not drain meanwhile)."""
    streams = get_streams(streams_layer)
    start = await streams.position("busy")
    await streams.publish("busy", 0)

    async def publisher() -> None:
        for n in range(1, 60):
            await streams.publish("busy", n)
            await asyncio.sleep(0)

    sending = asyncio.create_task(publisher())
    channel = await streams_layer.new_channel()
    await streams.subscribe("busy", channel)
    recovery = await streams.recover("busy", start.epoch, start.offset)
    await sending
    assert recovery.reload is None
    got = [entry.data for entry in recovery.entries]
    last = recovery.position.offset
    while last < 60:
        message = await receive(streams_layer, channel)
        if message["offset"] <= recovery.position.offset:
            continue
        assert message["offset"] == last + 1
        last = message["offset"]
        got.append(message["data"])
    assert got == list(range(60))


async def test_get_streams_returns_one_object_per_layer(streams_layer: BaseChannelLayer) -> None:
    assert get_streams(streams_layer) is get_streams(streams_layer)
    with pytest.raises(ValueError, match="first call only"):
        get_streams(streams_layer, config={})


@pytest.mark.slow
async def test_messages_older_than_max_age_are_trimmed(streams_layer_factory: Any) -> None:
    """Publishing every 0.1 s to a stream that keeps 3 s: the first message goes once it is 3 s old, while the stream
    (written to all along) keeps its epoch."""
    async with streams_layer_factory() as layer:
        streams = get_streams(layer, config={"aged": {"max_age": 3}})
        first = await streams.publish("aged", 0)
        deadline = asyncio.get_running_loop().time() + 30
        while (await streams.recover("aged", first.epoch, 0)).reload is None:
            assert asyncio.get_running_loop().time() < deadline, "the old message was never trimmed"
            await asyncio.sleep(0.1)
            top = await streams.publish("aged", "later")
        recovery = await streams.recover("aged", first.epoch, 0)
        assert recovery.reload == "trimmed" and recovery.position.epoch == first.epoch
        assert (await streams.recover("aged", first.epoch, top.offset - 1)).entries[-1].offset == top.offset


@pytest.mark.slow
async def test_a_stream_silent_for_max_age_is_forgotten_under_a_new_epoch(streams_layer_factory: Any) -> None:
    async with streams_layer_factory() as layer:
        streams = get_streams(layer, config={"brief": {"max_age": 0.5}})
        before = await streams.publish("brief", 1)
        deadline = asyncio.get_running_loop().time() + 30
        while (await streams.position("brief")).epoch == before.epoch:
            assert asyncio.get_running_loop().time() < deadline, "the silent stream was never forgotten"
            await asyncio.sleep(0.1)
        after = await streams.publish("brief", 2)
        assert after.offset == 1
        assert (await streams.recover("brief", before.epoch, 1)).reload == "epoch"


async def test_a_named_channel_can_subscribe_too(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    await streams.subscribe("s", "stream-reader")
    position = await streams.publish("s", {"n": 1})
    message = await receive(streams_layer, "stream-reader")
    assert (message["epoch"], message["offset"], message["data"]) == (position.epoch, 1, {"n": 1})
