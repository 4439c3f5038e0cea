"""The streams watch: subscriptions outlive a Redis that lost its data (``tether/streams/watch.py``).

The bookkeeping is tested without Redis; the rest on private redis-servers (never the shared one), killed and started
again without persistence. Layers sharing a prefix stand for processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from tests.layers.conftest import eventually
from tests.layers.redis.conftest import processes_on
from tests.streams.test_redis_streams import publish_until_redis_is_back
from tether.exceptions import LayerUnavailable
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from tether.streams import RESET_TYPE, Position, Streams, get_streams
from tether.streams.redis import RedisStreams
from tether.streams.watch import BATCH, Subscriptions

WAIT = 20
LAYERS = [RedisChannelLayer, RedisPubSubChannelLayer]
OURS = "specific.abc!1"  # a channel of the process whose client id is "abc"
ALSO_OURS = "specific.abc!2"


# The bookkeeping ---------------------------------------------------------------------------------------------------


def test_the_first_epoch_read_is_the_one_followed_and_another_one_is_a_loss() -> None:
    subscriptions = Subscriptions("abc", lifetime_ms=60_000)
    subscriptions.add("room", OURS, now=1000)
    assert not subscriptions.lost("room", ("e1", 3, 1), now=1000)
    assert not subscriptions.lost("room", ("e1", 9, 1), now=1000)
    assert subscriptions.lost("room", ("e2", 1, 1), now=1000)
    subscriptions.told("room", "e2")
    assert not subscriptions.lost("room", ("e2", 1, 1), now=1000)


def test_an_epoch_read_by_a_subscribe_is_followed_before_the_watch_reads_one() -> None:
    subscriptions = Subscriptions("abc", lifetime_ms=60_000)
    subscriptions.add("room", OURS, now=1000)
    subscriptions.saw("room", "e1")
    subscriptions.saw("room", "e2")  # a later subscriber's read does not move the epoch its elders follow
    assert subscriptions.lost("room", ("e2", 0, 1), now=1000)


def test_fewer_memberships_in_redis_than_this_process_subscribed_is_a_loss() -> None:
    subscriptions = Subscriptions("abc", lifetime_ms=60_000)
    subscriptions.add("room", OURS, now=1000)
    subscriptions.add("room", ALSO_OURS, now=1000)
    subscriptions.add("room", "worker-queue", now=1000)  # a named channel is a member of the group itself
    assert not subscriptions.lost("room", ("e1", 0, 2), now=1000)
    assert subscriptions.lost("room", ("e1", 0, 1), now=1000)
    assert subscriptions.lost("room", ("", 0, 0), now=1000)  # Redis has forgotten everything


def test_a_stream_without_history_and_with_its_memberships_is_not_lost() -> None:
    subscriptions = Subscriptions("abc", lifetime_ms=60_000)
    subscriptions.add("room", OURS, now=1000)
    assert not subscriptions.lost("room", ("", 0, 1), now=1000)
    assert not subscriptions.lost("room", ("e1", 1, 1), now=1000)


def test_memberships_kept_in_the_process_are_not_counted() -> None:
    subscriptions = Subscriptions(None, lifetime_ms=60_000)
    subscriptions.add("room", OURS, now=1000)
    assert not subscriptions.lost("room", ("e1", 0, -1), now=1000)
    assert subscriptions.lost("room", ("e2", 0, -1), now=1000)


def test_a_subscription_older_than_group_expiry_is_forgotten_as_the_layer_forgets_it() -> None:
    subscriptions = Subscriptions("abc", lifetime_ms=60_000)
    subscriptions.add("room", OURS, now=1000)
    subscriptions.add("room", ALSO_OURS, now=50_000)
    assert subscriptions.channels("room", now=70_000) == [ALSO_OURS]
    assert not subscriptions.lost("room", ("e1", 0, 1), now=70_000)
    assert subscriptions.channels("room", now=200_000) == []
    assert not subscriptions and subscriptions.streams() == []


def test_the_last_unsubscribe_forgets_the_stream_and_its_epoch() -> None:
    subscriptions = Subscriptions("abc", lifetime_ms=60_000)
    subscriptions.add("room", OURS, now=1000)
    subscriptions.saw("room", "e1")
    subscriptions.discard("room", OURS)
    subscriptions.discard("room", OURS)  # twice is harmless
    assert not subscriptions
    subscriptions.add("room", OURS, now=2000)
    assert not subscriptions.lost("room", ("e2", 0, 1), now=2000)  # a new subscriber starts from what it reads


# On Redis ----------------------------------------------------------------------------------------------------------


def redis_streams(layer: Any) -> RedisStreams:
    streams = get_streams(layer)
    assert isinstance(streams, RedisStreams)
    return streams


def script_calls(server: Any) -> int:
    calls = {name: stats["calls"] for name, stats in server.client().info("commandstats").items()}
    return int(calls.get("cmdstat_evalsha", 0)) + int(calls.get("cmdstat_eval", 0))


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_a_check_is_one_script_call_whatever_the_number_of_subscribers(
    redis_servers: Any, layer_class: type
) -> None:
    server = redis_servers.start()
    async with processes_on(layer_class, 1, hosts=[server.url]) as (layer,):
        streams = redis_streams(layer)
        costs = []
        for subscribers in (1, 300):
            for n in range(subscribers):
                await streams.subscribe(f"room.{n % 3}", await layer.new_channel())
            await streams.watch.check()  # loads the script
            before = script_calls(server)
            assert await streams.watch.check() == []
            costs.append(script_calls(server) - before)
        assert costs == [1, 1]


async def test_a_sharded_check_is_one_script_call_per_host(redis_servers: Any) -> None:
    servers = [redis_servers.start() for _ in range(2)]
    async with processes_on(RedisChannelLayer, 1, hosts=[server.url for server in servers]) as (layer,):
        streams = redis_streams(layer)
        for n in range(200):
            await streams.subscribe(f"room.{n % 20}", await layer.new_channel())
        await streams.watch.check()
        before = [script_calls(server) for server in servers]
        assert await streams.watch.check() == []
        assert [script_calls(server) - count for server, count in zip(servers, before, strict=True)] == [1, 1]


async def check_until_redis_is_back(streams: RedisStreams) -> list[str]:
    """``streams.watch.check()``, again while this process's connections find out that Redis restarted."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return list(await streams.watch.check())
        except (LayerUnavailable, ConnectionError, redis.RedisError):
            assert time.monotonic() < deadline, "Redis did not come back"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def subscribed(server: Any, layer_class: type) -> AsyncIterator[tuple[Streams, RedisStreams, Any, str, Position]]:
    """A publishing process and a reading one on ``server``, a channel of the reader subscribed to "room": the
    publisher's streams, the reader's, the reader's layer, the channel and the position read after subscribing."""
    async with processes_on(layer_class, 2, hosts=[server.url], unavailable_timeout=0.5) as (publisher, reader):
        channel = await reader.new_channel()
        streams = redis_streams(reader)
        await streams.subscribe("room", channel)
        yield get_streams(publisher), streams, reader, channel, await streams.position("room")


async def next_of_type(layer: Any, channel: str, kind: str) -> dict[str, Any]:
    """The next message of type ``kind`` on ``channel``, skipping others."""
    deadline = time.monotonic() + WAIT
    while True:
        message = await asyncio.wait_for(layer.receive(channel), max(0.1, deadline - time.monotonic()))
        if message["type"] == kind:
            return dict(message)


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_after_a_restart_a_check_puts_the_subscribers_back_and_tells_them_the_new_position(
    redis_servers: Any, layer_class: type
) -> None:
    server = redis_servers.start()
    async with subscribed(server, layer_class) as (publishing, streams, reader, channel, before):
        await publishing.publish("room", "before")
        assert (await asyncio.wait_for(reader.receive(channel), WAIT))["offset"] == 1

        server.kill()
        server.start()
        after = await publish_until_redis_is_back(publishing, "room", "after")
        assert after.epoch != before.epoch
        assert await check_until_redis_is_back(streams) == ["room"]
        reset = await next_of_type(reader, channel, RESET_TYPE)
        assert reset == {"type": RESET_TYPE, "stream": "room", "epoch": after.epoch, "offset": 1}

        await publishing.publish("room", "live again")
        message = await next_of_type(reader, channel, "stream.message")
        assert (message["epoch"], message["offset"], message["data"]) == (after.epoch, 2, "live again")
        assert await streams.watch.check() == []  # told once


async def test_after_a_restart_with_nothing_published_the_memberships_come_back_without_news(
    redis_servers: Any,
) -> None:
    server = redis_servers.start()
    async with subscribed(server, RedisChannelLayer) as (publishing, streams, reader, channel, _):
        server.kill()
        server.start()

        lost = await check_until_redis_is_back(streams)
        assert lost == ["room"]
        first = await publishing.publish("room", "first of the new epoch")
        message = await asyncio.wait_for(reader.receive(channel), WAIT)  # no reset came before it: nothing to tell
        assert (message["type"], message["epoch"], message["offset"]) == ("stream.message", first.epoch, 1)


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_a_subscriber_whose_full_channel_dropped_the_end_of_a_burst_is_told_to_catch_up(
    redis_servers: Any, layer_class: type
) -> None:
    server = redis_servers.start()
    async with processes_on(layer_class, 2, hosts=[server.url], capacity=5) as (publisher, reader):
        channel = await reader.new_channel()
        streams = redis_streams(reader)
        await streams.subscribe("room", channel)
        publishing = get_streams(publisher)
        for n in range(20):
            top = await publishing.publish("room", n)
        # Nobody reads meanwhile: the channel keeps 5 of the 20 and the layer drops the others (no later message
        # would show the reader the gap).
        await eventually(lambda: reader.stats()["group_full_drops"] >= 15, timeout=WAIT)
        kept = [await asyncio.wait_for(reader.receive(channel), WAIT) for _ in range(5)]
        assert [message["offset"] for message in kept] == [1, 2, 3, 4, 5]

        assert await streams.watch.check() == []
        reset = await next_of_type(reader, channel, RESET_TYPE)
        assert reset == {"type": RESET_TYPE, "stream": "room", "epoch": top.epoch, "offset": 20}
        await streams.watch.check()  # told once
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.receive(channel), 0.3)


async def test_the_watch_checks_by_itself_every_interval(redis_servers: Any, settings: Any) -> None:
    settings.TETHER_STREAMS_WATCH_INTERVAL = 0.2
    server = redis_servers.start()
    async with subscribed(server, RedisChannelLayer) as (publishing, streams, reader, channel, before):
        assert streams.watch.interval == 0.2
        server.kill()
        server.start()
        after = await publish_until_redis_is_back(publishing, "room", "after")
        reset = await next_of_type(reader, channel, RESET_TYPE)
        assert (reset["epoch"], reset["offset"]) == (after.epoch, 1) and after.epoch != before.epoch


async def test_the_last_unsubscribe_stops_the_watch_and_a_check_then_costs_nothing(redis_servers: Any) -> None:
    server = redis_servers.start()
    async with processes_on(RedisChannelLayer, 1, hosts=[server.url]) as (layer,):
        streams = redis_streams(layer)
        channels = [await layer.new_channel() for _ in range(2)]
        for channel in channels:
            await streams.subscribe("room", channel)
        state = streams.watch._loops.get()
        task = state.task
        assert task is not None and not task.done()
        for channel in channels:
            await streams.unsubscribe("room", channel)
        await eventually(task.done)
        before = script_calls(server)
        assert await streams.watch.check() == []
        assert script_calls(server) == before


async def test_streams_past_a_call_s_batch_are_read_by_more_calls(redis_servers: Any) -> None:
    server = redis_servers.start()
    async with processes_on(RedisChannelLayer, 1, hosts=[server.url]) as (layer,):
        streams = redis_streams(layer)
        channel = await layer.new_channel()
        for n in range(2 * BATCH + 1):
            await streams.subscribe(f"room.{n}", channel)
        await streams.watch.check()
        before = script_calls(server)
        assert await streams.watch.check() == []
        assert script_calls(server) - before == 3


async def test_on_a_cluster_a_check_is_one_call_per_stream_slot_and_a_membership_deleted_by_hand_comes_back(
    redis_cluster: Any,
) -> None:
    hosts = [{"address": redis_cluster[0].url, "cluster": True}]
    async with processes_on(RedisChannelLayer, 2, hosts=hosts) as (publisher, reader):
        streams = redis_streams(reader)
        channels = [await reader.new_channel() for _ in range(30)]
        for n, channel in enumerate(channels):
            await streams.subscribe(f"room.{n % 3}", channel)
        await streams.watch.check()
        before = sum(script_calls(node) for node in redis_cluster)
        assert await streams.watch.check() == []
        assert sum(script_calls(node) for node in redis_cluster) - before == 3  # the three streams' slots

        cluster = redis.RedisCluster.from_url(redis_cluster[0].url)
        try:
            cluster.delete(reader.keys.group_members("room.0", reader.client_id))
        finally:
            cluster.close()
        assert await streams.watch.check() == ["room.0"]
        await get_streams(publisher).publish("room.0", "after")
        message = await next_of_type(reader, channels[0], "stream.message")
        assert (message["offset"], message["data"]) == (1, "after")


async def test_a_channel_that_unsubscribes_while_the_watch_adds_it_again_is_not_left_in_the_group(
    redis_servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_servers.start()
    async with processes_on(RedisChannelLayer, 1, hosts=[server.url]) as (layer,):
        streams = redis_streams(layer)
        channel = await layer.new_channel()
        await streams.subscribe("room", channel)
        members = layer.keys.group_members("room", layer.client_id)
        server.client().delete(members)  # lost, as after a restart
        group_add = layer.group_add

        async def unsubscribed_meanwhile(group: str, added: str) -> None:
            await streams.unsubscribe(group, added)  # the connection closes while the watch puts it back
            await group_add(group, added)

        monkeypatch.setattr(layer, "group_add", unsubscribed_meanwhile)
        assert await streams.watch.check() == ["room"]
        assert server.client().zcard(members) == 0
