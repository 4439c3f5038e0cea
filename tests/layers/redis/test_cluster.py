"""Redis Cluster: commands batched per master, redirections followed, blocking reads unblocked on close.

The cluster (3 masters, no replicas) is started by the ``redis_cluster`` fixture for this module; tests that move a
slot leave every slot served, so the order of the tests does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from tether.layers.redis.cluster import ClusterEndpoint, command_key, slot_of
from tether.layers.redis.config import parse_hosts
from tether.layers.redis.endpoints import TransportSettings

from .conftest import RedisServer, processes_on, wait_until

WAIT = 10


def cluster_host(nodes: list[RedisServer]) -> dict[str, object]:
    return {"address": nodes[0].url, "cluster": True}


def node_id(node: RedisServer) -> str:
    return node.client().execute_command("CLUSTER", "MYID").decode()


def owner_port(node: RedisServer, slot: int) -> int:
    """The port of the master serving ``slot``, as ``node`` sees the cluster."""
    for start, end, master, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(master[1])
    raise LookupError(slot)


def owner_of(nodes: list[RedisServer], slot: int) -> RedisServer:
    port = owner_port(nodes[0], slot)
    return next(node for node in nodes if node.port == port)


def migrate_slot(nodes: list[RedisServer], slot: int, target: RedisServer) -> None:
    """Move ``slot`` with its keys to ``target``, as ``redis-cli --cluster reshard`` does, and wait for every node
    to agree."""
    source = owner_of(nodes, slot)
    source_client, target_client = source.client(), target.client()
    target_client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
    source_client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
    while keys := source_client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        source_client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    for node in (target, source, *nodes):
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
    wait_until(lambda: all(owner_port(node, slot) == target.port for node in nodes), 10, "the slot to move")


@contextlib.asynccontextmanager
async def endpoint_on(nodes: list[RedisServer]):
    (spec,) = parse_hosts([cluster_host(nodes)])
    endpoint = ClusterEndpoint(spec, TransportSettings(unavailable_timeout=5, block_timeout=5))
    try:
        yield endpoint
    finally:
        await endpoint.aclose()


# Routing without I/O ----------------------------------------------------------------------------------------------


def test_the_routing_key_is_the_first_key_of_each_command_form():
    assert command_key(("EVALSHA", "sha", 2, "{a}:x", "{a}:y", "arg")) == "{a}:x"
    assert command_key(("EVAL", "return 1", 0)) is None
    assert command_key(("BLMPOP", 5, 1, "{a}:list", "LEFT", "COUNT", 3)) == "{a}:list"
    assert command_key(("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "STREAMS", "{a}:s", ">")) == "{a}:s"
    assert command_key(("LPUSH", "{a}:list", b"x")) == "{a}:list"
    assert command_key(("SCAN", 0, "MATCH", "*")) is None


def test_slots_follow_the_cluster_hash_and_hash_tags():
    assert slot_of("123456789") == 12739  # the CRC16 check value of the cluster specification
    assert slot_of("{user1}:inbox") == slot_of("{user1}:groups") == slot_of("user1")
    assert slot_of(b"foo") == 12182


# Batching and redirections ----------------------------------------------------------------------------------------


async def test_commands_issued_together_share_one_connection_per_master(redis_cluster):
    keys = [f"batch-{number}" for number in range(300)]
    masters = {owner_of(redis_cluster, slot).port for slot in {slot_of(key) for key in keys}}
    assert len(masters) == 3, "the keys should spread over every master"
    before = {node.port: node.client().info("stats")["total_connections_received"] for node in redis_cluster}
    async with endpoint_on(redis_cluster) as endpoint:
        await asyncio.gather(*(endpoint.call("SET", key, key) for key in keys))
        values = await asyncio.gather(*(endpoint.call("GET", key) for key in keys))
        assert values == [key.encode() for key in keys]
        await asyncio.gather(*(endpoint.call("DEL", key) for key in keys))
    for node in redis_cluster:
        # 600 commands to each master came over one link: a connection for commands (plus the slot map's client).
        opened = node.client().info("stats")["total_connections_received"] - before[node.port]
        assert opened <= 4, f"{opened} connections to the master at {node.port}"


async def test_a_slot_migrated_under_a_layer_is_followed_by_senders_and_readers(redis_cluster):
    async with processes_on(RedisChannelLayer, 2, hosts=[cluster_host(redis_cluster)]) as (sender, receiver):
        channel = "cluster.moving"
        slot = slot_of(sender.keys.channel(channel))
        await sender.send(channel, {"type": "before", "n": 0})
        assert await asyncio.wait_for(receiver.receive(channel), WAIT) == {"type": "before", "n": 0}
        # The receiver's reader is blocked on the old owner now; a message waits in the slot while it moves.
        await sender.send(channel, {"type": "before", "n": 1})
        target = next(node for node in redis_cluster if node.port != owner_of(redis_cluster, slot).port)
        migrate_slot(redis_cluster, slot, target)
        await sender.send(channel, {"type": "after", "n": 2})  # MOVED, then sent to the new owner
        received = [await asyncio.wait_for(receiver.receive(channel), WAIT) for _ in range(2)]
        assert [message["n"] for message in received] == [1, 2]


async def test_a_command_during_a_migration_follows_ask_to_the_importing_node(redis_cluster):
    async with endpoint_on(redis_cluster) as endpoint:
        key = "{asking}:new"
        slot = slot_of(key)
        source = owner_of(redis_cluster, slot)
        target = next(node for node in redis_cluster if node.port != source.port)
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
        try:
            # The key is on neither node: the source answers ASK, and the command runs on the target.
            assert await endpoint.call("RPUSH", key, b"x") == 1
        finally:
            for node in redis_cluster:
                node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
        wait_until(lambda: all(owner_port(node, slot) == target.port for node in redis_cluster), 10, "agree")
        assert await endpoint.call("LPOP", key) == b"x"  # it is on the target, which now owns the slot


async def test_a_command_for_an_unreachable_master_goes_to_the_owner_in_a_fresh_slot_map(redis_cluster):
    from redis.asyncio.cluster import ClusterNode

    from .conftest import free_port

    async with endpoint_on(redis_cluster) as endpoint:
        key = "{stale}:list"
        slot = slot_of(key)
        await endpoint.owner(slot)
        # The map names a master that is gone (as after a failover the client has not heard of yet).
        gone = ClusterNode("127.0.0.1", free_port(), "primary")
        endpoint._cluster.nodes_manager.slots_cache[slot] = [gone]
        assert await endpoint.call("RPUSH", key, b"once") == 1  # refused by the gone node, sent to the real owner
        assert (await endpoint.owner(slot)).port == owner_of(redis_cluster, slot).port
        assert await endpoint.call("LRANGE", key, 0, -1) == [b"once"]  # sent once
        await endpoint.call("DEL", key)


# Closing ----------------------------------------------------------------------------------------------------------


async def test_close_unblocks_a_blocked_cluster_read_rather_than_cancelling_it(redis_cluster):
    async with endpoint_on(redis_cluster) as endpoint:
        key = "{unblock}:list"
        connection = endpoint.blocking_connection(key)
        pop = asyncio.ensure_future(connection.call("BLMPOP", 5, 1, key, "LEFT", "COUNT", 10))
        deadline = asyncio.get_running_loop().time() + WAIT
        while not connection.waiting:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the command is written; Redis blocks it
        assert await connection.unblock()
        assert await asyncio.wait_for(pop, WAIT) is None  # answered as a timeout, not cancelled
        await connection.aclose()


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.01])
async def test_a_message_pushed_while_a_cluster_reader_closes_is_delivered_or_kept(redis_cluster, delay):
    host = cluster_host(redis_cluster)
    async with processes_on(RedisChannelLayer, 2, hosts=[host]) as (sender, receiver):
        channels = [f"cluster.closing.{number}" for number in range(5)]
        receives = [asyncio.ensure_future(receiver.receive(channel)) for channel in channels]
        await asyncio.sleep(0.3)  # the readers block in their pops

        async def send_all() -> None:
            await asyncio.sleep(delay)
            for channel in channels:
                await sender.send(channel, {"type": "late", "to": channel})

        await asyncio.gather(send_all(), receiver.close())
        # What the readers popped during close went to the waiting receives: let them take it.
        await asyncio.wait(receives, timeout=1)
        delivered = {task.result()["to"] for task in receives if task.done() and not task.cancelled()}
        for task in receives:
            task.cancel()
        kept = set()
        for channel in channels:
            owner = owner_of(redis_cluster, slot_of(sender.keys.channel(channel)))
            if owner.client().llen(sender.keys.channel(channel)):
                kept.add(channel)
        assert delivered | kept == set(channels), "a message was lost on close"
        assert not delivered & kept


# Sharded pub/sub --------------------------------------------------------------------------------------------------


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def test_the_pubsub_layer_serves_groups_and_channels_over_sharded_pubsub(redis_cluster):
    host = cluster_host(redis_cluster)
    async with processes_on(RedisPubSubChannelLayer, 2, hosts=[host]) as (first, second):
        members = [await second.new_channel() for _ in range(2)] + [await first.new_channel()]
        groups = [f"sharded-room-{number}" for number in range(12)]
        slots = {owner_of(redis_cluster, slot_of(first.keys.group(group))).port for group in groups}
        assert len(slots) == 3, "the groups' topics should spread over every master"
        for group in groups:
            for channel in members:
                await (first if channel == members[2] else second).group_add(group, channel)
        for number, group in enumerate(groups):
            await first.group_send(group, {"type": "room", "n": number})
        for channel in members:
            layer = first if channel == members[2] else second
            assert sorted([(await receive(layer, channel))["n"] for _ in groups]) == list(range(len(groups)))

        await first.send(members[0], {"type": "direct"})  # another process's channel: its process topic
        assert await receive(second, members[0]) == {"type": "direct"}
        waiting = asyncio.ensure_future(receive(second, "sharded.worker"))
        await asyncio.sleep(0.2)  # the receive subscribes to the named channel's topic
        await first.send("sharded.worker", {"type": "job"})
        assert await waiting == {"type": "job"}
        for node in redis_cluster:  # nothing went through classic pub/sub
            assert node.client().execute_command("PUBSUB", "CHANNELS", f"{first.prefix}*") == []


async def test_a_sharded_subscription_follows_its_slot_to_a_new_master(redis_cluster):
    host = cluster_host(redis_cluster)
    async with processes_on(RedisPubSubChannelLayer, 2, hosts=[host]) as (sender, receiver):
        channel = await receiver.new_channel()
        await receiver.group_add("sharded-moving", channel)
        await sender.group_send("sharded-moving", {"type": "before"})
        assert await receive(receiver, channel) == {"type": "before"}

        slot = slot_of(sender.keys.group("sharded-moving"))
        target = next(node for node in redis_cluster if node.port != owner_of(redis_cluster, slot).port)
        migrate_slot(redis_cluster, slot, target)

        def subscribed_on_target() -> bool:
            reply = target.client().execute_command("PUBSUB", "SHARDNUMSUB", sender.keys.group("sharded-moving"))
            return int(reply[1]) == 1

        deadline = asyncio.get_running_loop().time() + WAIT
        while not subscribed_on_target():  # Redis told the subscriber; it subscribes again on the new owner
            assert asyncio.get_running_loop().time() < deadline, "the subscription did not follow its slot"
            await asyncio.sleep(0.05)
        await sender.group_send("sharded-moving", {"type": "after"})
        assert await receive(receiver, channel) == {"type": "after"}


async def test_a_subscription_made_with_a_stale_slot_map_follows_moved_at_once(redis_cluster):
    host = cluster_host(redis_cluster)
    async with processes_on(RedisPubSubChannelLayer, 2, hosts=[host]) as (sender, receiver):
        channel = await receiver.new_channel()  # the receiver learns the slot map here
        slot = slot_of(receiver.keys.group("sharded-stale"))
        target = next(node for node in redis_cluster if node.port != owner_of(redis_cluster, slot).port)
        migrate_slot(redis_cluster, slot, target)
        started = asyncio.get_running_loop().time()
        await receiver.group_add("sharded-stale", channel)  # SSUBSCRIBE to the old owner: MOVED, then the new one
        assert asyncio.get_running_loop().time() - started < 4, "the subscription waited out its 5 s bound"
        await sender.group_send("sharded-stale", {"type": "found"})
        assert await receive(receiver, channel) == {"type": "found"}
