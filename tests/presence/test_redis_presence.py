"""Presence on the Redis layers across processes: layers standing for processes, and real processes killed with
SIGKILL or paused with SIGSTOP, on the shared Redis (a key prefix of each test's own) or on sharded private servers.

Bounds are waited for by polling with generous deadlines; the measured times are printed (``-s``), never asserted
against a speed target.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.layers.conftest import REDIS_URL
from tests.layers.redis.conftest import (  # noqa: F401 - redis_cluster, redis_servers: fixtures
    layer_on,
    new_prefix,
    redis_cluster,
    redis_servers,
)
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from tether.presence import PresenceCount, events_group, get_presence

PEER = Path(__file__).with_name("presence_peer.py")
WAIT = 20
LAYERS = [RedisChannelLayer, RedisPubSubChannelLayer]


@contextlib.asynccontextmanager
async def process(layer_class: type, prefix: str, **options: Any) -> AsyncIterator[Any]:
    """A layer and its presence tracker, standing for one process of the project."""
    hosts = options.pop("hosts", [REDIS_URL])
    async with layer_on(layer_class, prefix=prefix, hosts=hosts) as layer:
        presence = get_presence(layer, batch_window=0.02, **options)
        try:
            yield layer, presence
        finally:
            await presence.close()


@contextlib.asynccontextmanager
async def peer(layer_class: type, hosts: list[str], prefix: str, group: str, members: int, ttl: float, beat: float):
    """A real process that joins ``members`` channels to ``group`` and heartbeats; yields it and its channels."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PEER),
        *(layer_class.__name__, json.dumps(hosts), prefix, group, str(members), str(ttl), str(beat)),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(child.stdout.readline(), WAIT)
        assert line, "the presence peer ended early"
        yield child, json.loads(line)["channels"]
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGCONT)
                child.kill()
            await child.wait()


async def until(condition, timeout: float = WAIT, interval: float = 0.05) -> float:
    """Poll the async ``condition`` until it holds; the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout}s")
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def collect_events(layer, channel: str, into: list[dict]) -> None:
    while True:
        into.append(await layer.receive(channel))


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_two_processes_see_each_others_members_grouped_by_user_and_their_events(layer_class):
    prefix = new_prefix()
    async with process(layer_class, prefix) as (one, p1), process(layer_class, prefix) as (two, p2):
        watcher = await one.new_channel()
        await p1.join("room.x", watcher, user="ada", meta={"device": "laptop"})
        assert (await asyncio.wait_for(one.receive(watcher), WAIT))["type"] == "presence.join"

        tab = await two.new_channel()
        await p2.join("room.x", tab, user="ada", meta={"device": "phone"})
        bob = await two.new_channel()
        await p2.join("room.x", bob, user="bob", meta={"name": "Bob"})
        joined = []
        while len(joined) < 2:
            event = await asyncio.wait_for(one.receive(watcher), WAIT)
            assert event["type"] == "presence.join"
            joined += event["members"]
        assert sorted(entry["channel"] for entry in joined) == sorted([tab, bob])

        for tracker in (p1, p2):
            members = {member.user: member for member in await tracker.members("room.x")}
            assert sorted(members) == ["ada", "bob"]
            assert sorted(c.meta["device"] for c in members["ada"].connections) == ["laptop", "phone"]
            assert members["bob"].meta == {"name": "Bob"}
            assert await tracker.count("room.x") == PresenceCount(users=2, connections=3)

        await p2.leave("room.x", bob)
        event = await asyncio.wait_for(one.receive(watcher), WAIT)
        assert event["type"] == "presence.leave"
        assert event["members"] == [{"channel": bob, "user": "bob", "meta": {"name": "Bob"}}]
        assert await p1.count("room.x") == PresenceCount(users=1, connections=2)


@pytest.mark.parametrize("sharded", [False, True], ids=["one-redis", "sharded"])
@pytest.mark.parametrize("layer_class", LAYERS)
async def test_a_killed_process_s_members_disappear_within_the_ttl_and_one_leave_event_says_so(
    layer_class, sharded, request
):
    ttl, beat = 2.0, 0.5
    if sharded:  # two private servers, each holding the keys the hash ring gives it
        servers = request.getfixturevalue("redis_servers")
        hosts = [servers.start().url for _ in range(2)]
    else:
        hosts = [REDIS_URL]
    prefix = new_prefix()
    async with process(layer_class, prefix, hosts=hosts, ttl=ttl, heartbeat=beat) as (layer, presence):
        watcher = await layer.new_channel()
        await layer.group_add(events_group("room.kill"), watcher)
        async with peer(layer_class, hosts, prefix, "room.kill", 30, ttl, beat) as (child, channels):
            assert await presence.count("room.kill") == PresenceCount(users=3, connections=30)
            events: list[dict] = []
            collector = asyncio.ensure_future(collect_events(layer, watcher, events))
            try:
                child.send_signal(signal.SIGKILL)
                await child.wait()
                killed = time.monotonic()
                listed = await until(lambda: _empty(presence, "room.kill"), timeout=ttl + 10)
                await until(lambda: _left(events, 30), timeout=ttl + 10)
                announced = time.monotonic() - killed
            finally:
                collector.cancel()
                await asyncio.gather(collector, return_exceptions=True)
        print(f"\n{layer_class.__name__} sharded={sharded}: gone from lists {listed:.2f}s, leave {announced:.2f}s")
        leaves = [event for event in events if event["type"] == "presence.leave"]
        assert sorted(entry["channel"] for event in leaves for entry in event["members"]) == sorted(channels)
        assert len(leaves) == 1, "the 30 members' leaves came in one event"


async def _empty(presence, group: str) -> bool:
    return await presence.count(group) == PresenceCount(0, 0)


async def _left(events: list[dict], expected: int) -> bool:
    return sum(len(event["members"]) for event in events if event["type"] == "presence.leave") >= expected


async def test_a_pause_shorter_than_the_ttl_makes_no_leave_and_no_join():
    ttl, beat, pause = 8.0, 0.5, 1.0  # a pause of two beats, and 6.5 s of margin for a loaded machine
    prefix = new_prefix()
    async with process(RedisChannelLayer, prefix, ttl=ttl, heartbeat=beat) as (layer, presence):
        watcher = await layer.new_channel()
        await layer.group_add(events_group("room.blip"), watcher)
        async with peer(RedisChannelLayer, [REDIS_URL], prefix, "room.blip", 5, ttl, beat) as (child, _):
            events: list[dict] = []
            collector = asyncio.ensure_future(collect_events(layer, watcher, events))
            try:
                await until(lambda: _joined(events, 5))
                events.clear()  # the peer's join event: what follows must be nothing
                child.send_signal(signal.SIGSTOP)  # no heartbeat, no network: a blip
                deadline = time.monotonic() + pause
                while time.monotonic() < deadline:
                    assert await presence.count("room.blip") == PresenceCount(3, 5)
                    await asyncio.sleep(0.1)
                child.send_signal(signal.SIGCONT)
                await asyncio.sleep(beat * 2)  # a heartbeat after the pause, and one of ours
                assert await presence.count("room.blip") == PresenceCount(3, 5)
            finally:
                collector.cancel()
                await asyncio.gather(collector, return_exceptions=True)
            assert events == []


async def test_a_process_paused_longer_than_the_ttl_is_reaped_then_comes_back():
    ttl, beat = 2.0, 0.5
    prefix = new_prefix()
    async with process(RedisChannelLayer, prefix, ttl=ttl, heartbeat=beat) as (layer, presence):
        watcher = await layer.new_channel()
        await layer.group_add(events_group("room.back"), watcher)
        async with peer(RedisChannelLayer, [REDIS_URL], prefix, "room.back", 4, ttl, beat) as (child, channels):
            # Listing makes this process heartbeat, and so reap the dead (as any process using presence does).
            assert await presence.count("room.back") == PresenceCount(3, 4)
            events: list[dict] = []
            collector = asyncio.ensure_future(collect_events(layer, watcher, events))
            try:
                child.send_signal(signal.SIGSTOP)
                await until(lambda: _left(events, 4), timeout=ttl + 10)
                assert await presence.count("room.back") == PresenceCount(0, 0)
                child.send_signal(signal.SIGCONT)
                await until(lambda: _has(presence, "room.back", 4), timeout=WAIT)
                await until(lambda: _joined(events, 4), timeout=WAIT)
            finally:
                collector.cancel()
                await asyncio.gather(collector, return_exceptions=True)
            members = await presence.members("room.back")
            assert sorted(c.channel for member in members for c in member.connections) == sorted(channels)


async def test_a_reaped_process_s_members_count_as_leaves_of_the_reaper_and_as_joins_again_when_it_comes_back():
    """Joins minus leaves, added up over the processes (tether_presence_events_total), stay who is present."""
    ttl, beat = 1.0, 0.25
    prefix = new_prefix()
    async with (
        process(RedisChannelLayer, prefix, ttl=ttl, heartbeat=beat) as (one, dead),
        process(RedisChannelLayer, prefix, ttl=ttl, heartbeat=beat) as (_, reaper),
    ):
        for n in range(3):
            await dead.join("room.counted", f"specific.{one.client_id}!{n:08x}", listen=False)
        assert await reaper.count("room.counted") == PresenceCount(3, 3)  # the reaper heartbeats from here on
        heartbeat = dead._loops.get().heartbeat
        heartbeat.cancel()  # the process stops heartbeating, as when it is paused
        await asyncio.gather(heartbeat, return_exceptions=True)
        await until(lambda: _has(reaper, "room.counted", 0), timeout=ttl + WAIT)
        assert reaper.stats()["left"] == 3 and dead.stats()["left"] == 0
        assert dead.stats()["connections"] == 3  # still its own: it stores them again when it comes back
        await dead._beat_once()
        assert await reaper.count("room.counted") == PresenceCount(3, 3)
        assert dead.stats()["joined"] == 6 and dead.stats()["left"] == 0


async def _has(presence, group: str, connections: int) -> bool:
    return (await presence.count(group)).connections == connections


async def _joined(events: list[dict], expected: int) -> bool:
    return sum(len(event["members"]) for event in events if event["type"] == "presence.join") >= expected


async def test_a_heartbeat_costs_one_command_whatever_the_number_of_members(redis_servers):  # noqa: F811
    server = redis_servers.start()
    client = redis.Redis.from_url(server.url)
    prefix = new_prefix()
    counts = []
    # A long heartbeat, so that only the beats this test makes run; it calls the beat itself (one per process).
    async with (
        process(RedisChannelLayer, prefix, hosts=[server.url], ttl=120, heartbeat=60) as (one, p1),
        process(RedisChannelLayer, prefix, hosts=[server.url], ttl=120, heartbeat=60) as (two, p2),
    ):
        for members in (1, 500):
            for layer, tracker in ((one, p1), (two, p2)):
                # Channel names of the process, without new_channel(): no receive loop talks to Redis meanwhile.
                while (joined := len(tracker.local.get("room.cost", {}))) < members:
                    channel = f"specific.{layer.client_id}!{joined:08x}"
                    await tracker.join("room.cost", channel, user=joined, listen=False)
            for tracker in (p1, p2):
                await tracker._beat_once()  # the script is loaded (a first EVAL) before counting
                # The join events go out on a timer: sent before counting, they are not counted as a beat's.
                await tracker.flush_events()
                await asyncio.gather(*list(tracker._sending))
            client.config_resetstat()
            for tracker in (p1, p2):
                for _ in range(5):
                    await tracker._beat_once()
            stats = client.info("commandstats")
            counts.append({name: stat["calls"] for name, stat in stats.items() if name != "cmdstat_ping"})
    # 2 processes x 5 beats: one script call each, and the same commands inside the script (ZSCORE, ZADD,
    # ZRANGEBYSCORE, TIME), with 1 member per process as with 500.
    assert counts[0] == counts[1], counts
    assert counts[0]["cmdstat_evalsha"] == 10
    assert all(calls <= 10 for calls in counts[0].values()), counts


async def test_presence_works_on_a_redis_cluster_and_reaps_across_its_slots(redis_cluster):  # noqa: F811
    hosts = [{"address": redis_cluster[0].url, "cluster": True}]
    prefix = new_prefix()
    async with (
        process(RedisChannelLayer, prefix, hosts=hosts, ttl=2, heartbeat=0.5) as (one, p1),
        process(RedisChannelLayer, prefix, hosts=hosts, ttl=2, heartbeat=0.5) as (two, p2),
    ):
        watcher = await one.new_channel()
        await p1.join("room.cluster", watcher, user="ada")
        gone = [await two.new_channel() for _ in range(3)]
        for group in ("room.cluster", "room.other"):  # groups whose keys sit in other slots
            for number, channel in enumerate(gone):
                await p2.join(group, channel, user=f"u{number}", listen=False)
        assert await p1.count("room.cluster") == PresenceCount(users=4, connections=4)
        assert await p1.count("room.other") == PresenceCount(users=3, connections=3)
        await p2._loops.close_current()  # the second process stops heartbeating without leaving: as if it died
        await until(lambda: _has(p1, "room.other", 0), timeout=12)
        await until(lambda: _left_in(one, watcher, gone), timeout=12)
        assert await p1.count("room.cluster") == PresenceCount(users=1, connections=1)
        p2.local.clear()  # reaped: nothing left to leave on close


async def _left_in(layer, channel: str, expected: list[str]) -> bool:
    left: set[str] = set()
    with contextlib.suppress(asyncio.TimeoutError):
        while not left.issuperset(expected):
            event = await asyncio.wait_for(layer.receive(channel), 0.5)
            if event["type"] == "presence.leave":
                left.update(entry["channel"] for entry in event["members"])
    return left.issuperset(expected)


async def test_a_join_racing_the_last_leave_of_a_group_keeps_the_group_known_to_the_reaper():
    async with process(RedisChannelLayer, new_prefix(), ttl=4, heartbeat=1) as (layer, presence):
        first, second = (f"specific.{layer.client_id}!{name}" for name in ("first", "second"))
        await presence.join("room.race", first, listen=False)
        await asyncio.gather(presence.leave("room.race", first), presence.join("room.race", second, listen=False))
        client = redis.Redis.from_url(REDIS_URL)
        try:
            assert client.smembers(presence.keys.groups_of(presence.process)) == {b"room.race"}
        finally:
            client.close()
