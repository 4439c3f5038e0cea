"""Scaling out: several hosts sharded by consistent hashing, a Sentinel-managed master with failover, Redis Cluster.

Every server here is started by the test (``redis_servers`` / ``redis_cluster`` fixtures) on free ports.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tether.exceptions import LayerUnavailable
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

from .conftest import processes_on, wait_until

WAIT = 10


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


def keys_of(server, prefix: str) -> list[bytes]:
    return server.client().keys(f"{prefix}:*")


# Sharding ---------------------------------------------------------------------------------------------------------


#: The deployments run without encryption and with it (sealed frames, tagged members: see storage.py).
ENCRYPTION = pytest.mark.parametrize("keys", [None, ["deployment-key"]], ids=["plain", "encrypted"])


@ENCRYPTION
async def test_channels_and_groups_spread_over_every_shard_and_work_across_processes(redis_servers, keys):
    servers = [redis_servers.start() for _ in range(3)]
    hosts = [server.url for server in servers]
    async with processes_on(RedisChannelLayer, 2, hosts=hosts, symmetric_encryption_keys=keys) as (first, second):
        for number in range(30):
            await first.send(f"jobs.{number}", {"type": "job", "n": number})
        for server in servers:
            assert keys_of(server, first.prefix), f"no key on the shard at port {server.port}"
        for number in range(30):
            assert (await receive(second, f"jobs.{number}"))["n"] == number

        members = [(layer, await layer.new_channel()) for layer in (first, second) for _ in range(2)]
        for group_number in range(6):
            for layer, channel in members:
                await layer.group_add(f"room-{group_number}", channel)
            await first.group_add(f"room-{group_number}", f"named.member.{group_number}")
        for group_number in range(6):
            await second.group_send(f"room-{group_number}", {"type": "room", "n": group_number})
        for group_number in range(6):
            for layer, channel in members:
                assert (await receive(layer, channel))["n"] == group_number
            assert (await receive(first, f"named.member.{group_number}"))["n"] == group_number

        await first.flush()
        for server in servers:
            assert keys_of(server, first.prefix) == []


async def test_the_pubsub_layer_shards_its_topics_over_several_hosts(redis_servers):
    servers = [redis_servers.start() for _ in range(2)]
    hosts = [server.url for server in servers]
    async with processes_on(RedisPubSubChannelLayer, 2, hosts=hosts) as (first, second):
        channels = [await second.new_channel() for _ in range(3)]
        for number in range(8):
            for channel in channels:
                await second.group_add(f"topic-{number}", channel)
        for number in range(8):
            await first.group_send(f"topic-{number}", {"type": "topic", "n": number})
        for channel in channels:
            # Topics on different hosts arrive over different connections: per group in order, across groups not.
            assert sorted([(await receive(second, channel))["n"] for _ in range(8)]) == list(range(8))
        await first.send(channels[0], {"type": "direct"})
        assert await receive(second, channels[0]) == {"type": "direct"}


# Sentinel ---------------------------------------------------------------------------------------------------------


def sentinel_master(sentinel, name: str) -> int:
    _host, port = sentinel.client().execute_command("SENTINEL", "get-master-addr-by-name", name)
    return int(port)


async def test_a_sentinel_failover_moves_the_layer_to_the_new_master(redis_servers):
    master = redis_servers.start("--repl-diskless-sync-delay", "0")
    replica = redis_servers.start("--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1", str(master.port))
    wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", 10, "sync")
    sentinel = redis_servers.start_sentinel(master, "tether-master")
    wait_until(
        lambda: sentinel.client().execute_command("SENTINEL", "REPLICAS", "tether-master"), 15, "Sentinel to see it"
    )
    host = {"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "tether-master"}
    async with processes_on(RedisChannelLayer, 2, hosts=[host], unavailable_timeout=1) as (sender, receiver):
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        await sender.group_send("room", {"type": "before.failover"})
        assert await receive(receiver, channel) == {"type": "before.failover"}
        assert keys_of(master, sender.prefix)
        wait_until(lambda: keys_of(replica, sender.prefix), 5, "replication of the group")

        waiting = asyncio.ensure_future(receiver.receive(channel))
        master.kill()
        wait_until(lambda: sentinel_master(sentinel, "tether-master") == replica.port, 20, "the failover")

        deadline = time.monotonic() + WAIT
        while True:
            try:
                await sender.group_send("room", {"type": "after.failover"})
                break
            except LayerUnavailable:
                assert time.monotonic() < deadline, "the sender never found the new master"
                await asyncio.sleep(0.1)
        assert await asyncio.wait_for(waiting, WAIT) == {"type": "after.failover"}
        assert receiver.stats()["reconnects"] >= 1


async def test_an_encrypting_layer_serves_groups_through_a_sentinel_managed_master(redis_servers):
    master = redis_servers.start()
    sentinel = redis_servers.start_sentinel(master, "tether-sealed")
    host = {"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "tether-sealed"}
    keys = ["sentinel-key"]
    async with processes_on(RedisChannelLayer, 2, hosts=[host], symmetric_encryption_keys=keys) as (sender, receiver):
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        await sender.group_add("room", "room.worker")
        await sender.group_send("room", {"type": "sealed"})
        assert await receive(receiver, channel) == {"type": "sealed"}
        assert await receive(receiver, "room.worker") == {"type": "sealed"}
        await sender.send(channel, {"type": "direct"})
        assert await receive(receiver, channel) == {"type": "direct"}
        index = {entry.decode() for entry in master.client().zrange(receiver.keys.group("room"), 0, -1)}
        assert index == {f"!{receiver.client_id}", sender.codec.member_entry("room", "room.worker")}


# Cluster ----------------------------------------------------------------------------------------------------------


@ENCRYPTION
async def test_a_cluster_holds_keys_on_every_master_and_serves_the_whole_api(redis_cluster, keys):
    host = {"address": redis_cluster[0].url, "cluster": True}
    async with processes_on(RedisChannelLayer, 2, hosts=[host], symmetric_encryption_keys=keys) as (first, second):
        locals_ = [await second.new_channel() for _ in range(2)] + [await first.new_channel()]
        for number in range(20):
            await first.send(f"cluster.jobs.{number}", {"type": "job", "n": number})
            await first.group_add(f"cluster-room-{number}", locals_[0])
        for node in redis_cluster:
            assert keys_of(node, first.prefix), f"no key on the master at port {node.port}"

        for number in range(20):
            assert (await receive(second, f"cluster.jobs.{number}"))["n"] == number

        for channel in locals_:
            await (first if channel == locals_[2] else second).group_add("cluster-everyone", channel)
        await first.group_add("cluster-everyone", "cluster.worker")
        await second.group_send("cluster-everyone", {"type": "hello"})
        assert await receive(second, locals_[0]) == {"type": "hello"}
        assert await receive(second, locals_[1]) == {"type": "hello"}
        assert await receive(first, locals_[2]) == {"type": "hello"}
        assert await receive(first, "cluster.worker") == {"type": "hello"}

        await first.send(locals_[1], {"type": "direct"})
        assert await receive(second, locals_[1]) == {"type": "direct"}

        await first.flush()
        for node in redis_cluster:
            assert keys_of(node, first.prefix) == []


# Other ways to reach Redis ----------------------------------------------------------------------------------------


async def test_a_redis_reached_over_a_unix_socket_serves_the_layer(redis_servers):
    socket_path = redis_servers.directory / "redis.sock"
    redis_servers.start("--unixsocket", str(socket_path), "--unixsocketperm", "700")
    async with processes_on(RedisChannelLayer, 2, hosts=[f"unix://{socket_path}?db=1"]) as (first, second):
        channel = await second.new_channel()
        await first.send(channel, {"type": "over.unix"})
        assert await receive(second, channel) == {"type": "over.unix"}
        await first.send("unix.jobs", {"type": "job"})
        assert await receive(second, "unix.jobs") == {"type": "job"}
