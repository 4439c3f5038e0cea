"""Durable channels on RedisChannelLayer when things go wrong: racing receivers, bad data, Redis restarts, a cluster.

Extra servers are started by the tests on free ports; the shared Redis is used under a prefix of each test's own.
"""

from __future__ import annotations

import asyncio
import contextlib

from tether.exceptions import LayerUnavailable
from tether.layers.durable import Delivery
from tether.layers.redis import RedisChannelLayer

from .conftest import layer_on, processes_on

WAIT = 5
DURABLE = {"durable": ["jobs"], "visibility_timeout": 1, "max_attempts": 3}


async def receive(layer, channel="jobs", timeout=WAIT):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def test_two_processes_racing_for_a_message_delivered_again_get_it_once():
    async with processes_on(RedisChannelLayer, 3, **DURABLE) as (first, second, third):
        await first.send("jobs", {"type": "job", "n": 1})
        assert (await receive(first)).attempts == 1  # and first never settles it
        racers = [asyncio.create_task(layer.receive("jobs")) for layer in (second, third)]
        done, pending = await asyncio.wait(racers, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        [winner] = done
        assert winner.result() == {"type": "job", "n": 1} and winner.result().attempts == 2
        await winner.result().ack()
        finished, _ = await asyncio.wait(pending, timeout=2)  # past another visibility timeout
        assert not finished
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def test_an_entry_that_cannot_be_read_is_dropped_counted_and_does_not_block_the_channel(shared_redis):
    async with layer_on(RedisChannelLayer, **DURABLE) as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        await (await receive(layer)).ack()
        shared_redis.xadd(layer.keys.stream("jobs"), {"f": b"no frame here"})
        await layer.send("jobs", {"type": "job", "n": 2})
        good = await receive(layer)
        assert good == {"type": "job", "n": 2}
        assert layer.stats()["decode_errors"] == 1


async def test_a_redis_restarted_with_persistence_keeps_queued_and_pending_messages(redis_servers):
    server = redis_servers.start("--appendonly", "yes", "--appendfsync", "always")
    async with layer_on(RedisChannelLayer, hosts=[server.url], unavailable_timeout=10, **DURABLE) as layer:
        for number in (1, 2):
            await layer.send("jobs", {"type": "job", "n": number})
        held = await receive(layer)  # pending when Redis goes down
        assert held["n"] == 1
        server.kill()
        server.start()
        numbers = sorted([(await receive(layer, timeout=15))["n"] for _ in range(2)])
        assert numbers == [1, 2]  # 2 was queued; 1, never acknowledged, is delivered again


async def test_a_redis_restarted_without_persistence_loses_the_queue_and_the_layer_carries_on(redis_servers):
    server = redis_servers.start()
    async with layer_on(RedisChannelLayer, hosts=[server.url], unavailable_timeout=10, **DURABLE) as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        server.kill()
        server.start()
        with contextlib.suppress(LayerUnavailable):  # the command that finds the old connection broken
            await layer.send("jobs", {"type": "job", "n": 2})
        await layer.send("jobs", {"type": "job", "n": 3})
        received = [(await receive(layer, timeout=15))["n"]]
        with contextlib.suppress(asyncio.TimeoutError):
            while True:
                received.append((await receive(layer, timeout=1.5))["n"])
        assert 3 in received and 1 not in received  # 1 was only in the memory of the Redis that was killed


async def test_durable_channels_work_on_a_cluster(redis_cluster):
    host = {"address": redis_cluster[0].url, "cluster": True}
    async with processes_on(RedisChannelLayer, 2, hosts=[host], **DURABLE) as (first, second):
        for number in range(6):
            await first.send(f"jobs{number}" if number else "jobs", {"type": "job", "n": number})
        delivery = await receive(second)
        assert isinstance(delivery, Delivery)
        await delivery.nack("try again")
        again = await receive(second)
        assert again.attempts == 2
        await again.ack()
        with contextlib.suppress(asyncio.TimeoutError):
            extra = await receive(second, timeout=1.5)
            raise AssertionError(f"delivered after its acknowledgement: {extra}")


async def test_encrypted_durable_messages_are_sealed_for_their_channel(shared_redis):
    async with layer_on(
        RedisChannelLayer, symmetric_encryption_keys=["k"], **DURABLE | {"durable": ["jobs", "mail"]}
    ) as layer:
        await layer.send("jobs", {"type": "job", "secret": "launch code"})
        [(_, fields)] = shared_redis.xrange(layer.keys.stream("jobs"))
        assert b"launch" not in fields[b"f"]
        shared_redis.xadd(layer.keys.stream("mail"), {"f": fields[b"f"]})  # copied to another durable channel
        await layer.send("mail", {"type": "mail", "n": 1})
        assert await receive(layer, "mail") == {"type": "mail", "n": 1}
        assert layer.stats()["refused_misrouted"] == 1
        delivery = await receive(layer)
        assert delivery == {"type": "job", "secret": "launch code"}
        await delivery.nack("once more")
        assert (await receive(layer)).attempts == 2
