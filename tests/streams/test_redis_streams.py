"""Streams on the Redis layers: what only Redis shows. Several layers sharing a prefix stand for several processes;
a private redis-server (never the shared one) is restarted without persistence; entries are garbled by hand."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis

from tests.layers.redis.conftest import processes_on
from tether.exceptions import LayerUnavailable, MessageTooLarge
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from tether.streams import get_streams
from tether.streams.storage import StreamKeys

WAIT = 20
LAYERS = [RedisChannelLayer, RedisPubSubChannelLayer]


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_offsets_grow_by_one_across_processes(layer_class: type) -> None:
    async with processes_on(layer_class, 2) as layers:
        first, second = (get_streams(layer) for layer in layers)
        positions = await asyncio.gather(
            *(streams.publish("shared", n) for n in range(50) for streams in (first, second))
        )
        assert sorted(position.offset for position in positions) == list(range(1, 101))
        assert {position.epoch for position in positions} == {(await first.position("shared")).epoch}


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_a_subscriber_in_another_process_receives_in_order(layer_class: type) -> None:
    async with processes_on(layer_class, 2) as (publisher, reader):
        channel = await reader.new_channel()
        await get_streams(reader).subscribe("room", channel)
        for n in range(1, 21):
            await get_streams(publisher).publish("room", n)
        got = [await asyncio.wait_for(reader.receive(channel), WAIT) for _ in range(20)]
        assert [(message["offset"], message["data"]) for message in got] == [(n, n) for n in range(1, 21)]


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_a_publish_is_one_script_call(redis_servers: Any, layer_class: type) -> None:
    server = redis_servers.start()
    async with processes_on(layer_class, 2, hosts=[server.url]) as (publisher, reader):
        channel = await reader.new_channel()
        await get_streams(reader).subscribe("room", channel)
        streams = get_streams(publisher)
        await streams.publish("room", "warm-up")  # loads the script
        client = server.client()
        client.config_resetstat()
        for n in range(10):
            await streams.publish("room", n)
        calls = {name: stats["calls"] for name, stats in client.info("commandstats").items()}
        assert calls.get("cmdstat_evalsha") == 10
        assert "cmdstat_eval" not in calls and "cmdstat_hincrby" in calls  # commands inside scripts count too
        client.close()


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_the_keys_expire_after_max_age_and_flush_deletes_them(layer_class: type, shared_redis: Any) -> None:
    async with processes_on(layer_class, 1) as (layer,):
        streams = get_streams(layer, config={"*": {"max_age": 600}})
        epoch = (await streams.publish("room", 1)).epoch
        keys = StreamKeys(layer.prefix)
        for key in (keys.history("room", epoch), keys.meta("room")):
            assert 0 < shared_redis.pttl(key) <= 600_000
        await layer.flush()
        assert not shared_redis.exists(keys.history("room", epoch), keys.meta("room"))


async def test_max_length_bounds_the_redis_stream(shared_redis: Any) -> None:
    async with processes_on(RedisChannelLayer, 1) as (layer,):
        streams = get_streams(layer, config={"*": {"max_length": 3}})
        for n in range(10):
            top = await streams.publish("room", n)
        assert shared_redis.xlen(StreamKeys(layer.prefix).history("room", top.epoch)) == 3


async def test_a_message_over_max_message_size_is_refused_and_not_kept() -> None:
    async with processes_on(RedisChannelLayer, 1, max_message_size=1000) as (layer,):
        streams = get_streams(layer)
        with pytest.raises(MessageTooLarge, match="max_message_size"):
            await streams.publish("room", "x" * 2000)
        assert (await streams.position("room")).offset == 0


async def publish_until_redis_is_back(streams: Any, stream: str, data: Any) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return await streams.publish(stream, data)
        except (LayerUnavailable, ConnectionError, redis.RedisError):
            assert time.monotonic() < deadline, "Redis did not come back"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_a_redis_restart_without_persistence_starts_a_new_epoch(redis_servers: Any, layer_class: type) -> None:
    server = redis_servers.start()
    async with processes_on(layer_class, 1, hosts=[server.url], unavailable_timeout=0.5) as (layer,):
        streams = get_streams(layer)
        for n in range(3):
            before = await streams.publish("room", n)
        server.kill()
        server.start()
        after = await publish_until_redis_is_back(streams, "room", "after")
        assert after.offset == 1 and after.epoch != before.epoch
        recovery = await streams.recover("room", before.epoch, before.offset)
        assert (recovery.reload, recovery.position) == ("epoch", after)


def garble(client: redis.Redis, keys: StreamKeys, stream: str, epoch: str, fields: dict[str, Any]) -> None:
    """Add an entry streams did not write as the stream's next offset, as a stray script or a person might."""
    offset = client.hincrby(keys.meta(stream), "o", 1)
    client.xadd(keys.history(stream, epoch), fields, id=f"{offset}-0")


@pytest.mark.parametrize("fields", [{"x": "no data field"}, {"d": b"\xc1 not msgpack", "t": "1"}])
async def test_a_garbage_entry_makes_recovery_a_reload_and_publishing_goes_on(
    shared_redis: Any, caplog: Any, fields: dict[str, Any]
) -> None:
    async with processes_on(RedisChannelLayer, 1) as (layer,):
        streams = get_streams(layer)
        first = await streams.publish("room", 1)
        garble(shared_redis, StreamKeys(layer.prefix), "room", first.epoch, fields)
        with caplog.at_level(logging.WARNING, logger="tether.streams"):
            recovery = await streams.recover("room", first.epoch, 0)
        assert recovery.reload == "trimmed" and recovery.entries == []
        assert "unreadable entry" in caplog.text
        after = await streams.publish("room", 3)
        assert after.offset == 3 and after.epoch == first.epoch
        assert [entry.data for entry in (await streams.recover("room", first.epoch, 2)).entries] == [3]


async def test_an_entry_deleted_by_hand_makes_recovery_across_it_a_reload(shared_redis: Any) -> None:
    async with processes_on(RedisChannelLayer, 1) as (layer,):
        streams = get_streams(layer)
        for n in range(1, 4):
            top = await streams.publish("room", n)
        shared_redis.xdel(StreamKeys(layer.prefix).history("room", top.epoch), "2-0")
        assert (await streams.recover("room", top.epoch, 0)).reload == "trimmed"
        assert [entry.data for entry in (await streams.recover("room", top.epoch, 2)).entries] == [3]


async def test_unreadable_meta_starts_a_new_epoch(shared_redis: Any) -> None:
    async with processes_on(RedisChannelLayer, 1) as (layer,):
        streams = get_streams(layer)
        before = await streams.publish("room", 1)
        shared_redis.hset(StreamKeys(layer.prefix).meta("room"), "o", "not a number")
        after = await streams.publish("room", 2)
        assert after.offset == 1 and after.epoch != before.epoch
        assert await streams.recover("room", after.epoch, 0) == await streams.recover("room", after.epoch, 0)
        assert [entry.data for entry in (await streams.recover("room", after.epoch, 0)).entries] == [2]


async def test_another_prefix_does_not_see_the_stream() -> None:
    async with processes_on(RedisChannelLayer, 1) as (mine,), processes_on(RedisChannelLayer, 1) as (theirs,):
        await get_streams(mine).publish("room", 1)
        assert (await get_streams(theirs).position("room")).offset == 0
