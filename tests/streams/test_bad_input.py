"""Bad input to streams gets a clear error and leaves nothing behind, on every layer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tether.layers.base import BaseChannelLayer
from tether.streams import Recovery, get_streams


@pytest.mark.parametrize("name", ["", "has space", "a" * 100, "brace{", None, 5])
async def test_a_bad_stream_name_is_refused(streams_layer: BaseChannelLayer, name: Any) -> None:
    streams = get_streams(streams_layer)
    for call in (
        lambda: streams.publish(name, 1),
        lambda: streams.position(name),
        lambda: streams.recover(name, "e", 0),
        lambda: streams.subscribe(name, "x"),
    ):
        with pytest.raises(TypeError, match="name"):
            await call()


@pytest.mark.parametrize("offset", ["3", 1.0, None, True, [1]])
async def test_an_offset_that_is_not_an_int_is_a_type_error(streams_layer: BaseChannelLayer, offset: Any) -> None:
    with pytest.raises(TypeError, match="offset must be an int"):
        await get_streams(streams_layer).recover("s", "e", offset)


async def test_a_negative_offset_is_a_value_error(streams_layer: BaseChannelLayer) -> None:
    with pytest.raises(ValueError, match="0 or more"):
        await get_streams(streams_layer).recover("s", "e", -1)


@pytest.mark.parametrize("epoch", [None, 3, b"abc"])
async def test_an_epoch_that_is_not_a_str_is_a_type_error(streams_layer: BaseChannelLayer, epoch: Any) -> None:
    with pytest.raises(TypeError, match="epoch must be a str"):
        await get_streams(streams_layer).recover("s", epoch, 0)


async def test_a_huge_garbage_epoch_is_a_reload(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    top = await streams.publish("s", 1)
    recovery = await streams.recover("s", "x" * 10_000, 0)
    assert (recovery.reload, recovery.position) == ("epoch", top)


@pytest.mark.parametrize("limit", [0, -1, "5", 1.5])
async def test_a_bad_limit_is_a_value_error(streams_layer: BaseChannelLayer, limit: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        await get_streams(streams_layer).recover("s", "e", 0, limit=limit)


@pytest.mark.parametrize("data", [{1, 2}, {"x": object()}, float("nan"), b"bytes"])
async def test_data_that_is_not_json_is_refused_and_not_kept(streams_layer: BaseChannelLayer, data: Any) -> None:
    streams = get_streams(streams_layer)
    before = await streams.position("s")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        await streams.publish("s", data)
    assert await streams.position("s") == before


async def test_data_is_sent_and_kept_as_its_json_round_trip(streams_layer: BaseChannelLayer) -> None:
    streams = get_streams(streams_layer)
    channel = await streams_layer.new_channel()
    await streams.subscribe("s", channel)
    top = await streams.publish("s", {3: (1, 2)})
    live = await asyncio.wait_for(streams_layer.receive(channel), 10)
    recovered = await streams.recover("s", top.epoch, 0)
    assert live["data"] == recovered.entries[0].data == {"3": [1, 2]}


@pytest.mark.parametrize("epoch", ["", "{x}", "a b\n", ":", "*", "é"])
async def test_an_odd_epoch_is_a_reload_not_an_error(streams_layer: BaseChannelLayer, epoch: str) -> None:
    streams = get_streams(streams_layer)
    top = await streams.publish("s", 1)
    assert await streams.recover("s", epoch, 0) == Recovery(top, [], "epoch")


@pytest.mark.parametrize("offset", [2**53, 10**30])
async def test_a_huge_offset_is_a_future_reload(streams_layer: BaseChannelLayer, offset: int) -> None:
    streams = get_streams(streams_layer)
    top = await streams.publish("s", 1)
    assert await streams.recover("s", top.epoch, offset) == Recovery(top, [], "future")
