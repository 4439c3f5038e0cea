"""Named channels on RedisChannelLayer: how many messages a pop takes ahead, and where unreceived ones go.

A named channel is a shared queue: what one process pops is its own to deliver. A fast receiver lets the reader take
a few messages per pop; a slow one gets them one at a time, leaving the rest in Redis for other workers.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tether.layers.redis import RedisChannelLayer
from tether.layers.redis.core import PREFETCH_WINDOW

from .conftest import layer_on, processes_on

WAIT = 5
CHANNEL = "jobs"


async def receive(layer, channel=CHANNEL):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


def queued_in_redis(client, layer) -> int:
    return client.llen(layer.keys.channel(CHANNEL))


async def send_numbered(layer, count: int) -> None:
    for number in range(count):
        await layer.send(CHANNEL, {"type": "job", "n": number})


async def test_a_fast_receiver_takes_several_messages_per_pop(shared_redis):
    async with layer_on(RedisChannelLayer, capacity=200) as layer:
        await send_numbered(layer, 100)
        received = [(await receive(layer))["n"] for _ in range(40)]
        assert received == list(range(40))
        # 40 receives came back within the window each time, so pops grew: Redis gave out more than 40.
        assert queued_in_redis(shared_redis, layer) < 60


async def test_a_slow_receiver_takes_one_message_per_pop(shared_redis):
    async with layer_on(RedisChannelLayer) as layer:
        await send_numbered(layer, 6)
        for number in range(6):
            assert (await receive(layer))["n"] == number
            assert queued_in_redis(shared_redis, layer) == 5 - number
            await asyncio.sleep(PREFETCH_WINDOW * 3)  # slower than the window: no message is taken ahead


async def test_prefetch_of_one_pops_one_message_at_a_time(shared_redis):
    async with layer_on(RedisChannelLayer, prefetch=1) as layer:
        await send_numbered(layer, 30)
        for number in range(30):
            assert (await receive(layer))["n"] == number
            assert queued_in_redis(shared_redis, layer) == 29 - number


async def test_messages_taken_ahead_go_back_to_the_head_of_the_list_on_close_in_order(shared_redis):
    async with processes_on(RedisChannelLayer, capacity=200) as (worker, other):
        await send_numbered(worker, 100)
        assert [(await receive(worker))["n"] for _ in range(40)] == list(range(40))
        taken_ahead = worker.stats()["local_queued"]
        assert taken_ahead > 0
        await worker.close()
        assert worker.stats()["prefetch_returned"] == taken_ahead
        assert queued_in_redis(shared_redis, other) == 60
        assert [(await receive(other))["n"] for _ in range(60)] == list(range(40, 100))


async def test_messages_given_back_to_a_list_drained_meanwhile_expire_with_it(shared_redis):
    async with layer_on(RedisChannelLayer, capacity=200, expiry=30) as layer:
        await send_numbered(layer, 100)
        [await receive(layer) for _ in range(40)]
        assert layer.stats()["local_queued"] > 0
        shared_redis.delete(layer.keys.channel(CHANNEL))  # as if another worker took the rest
        await layer.close()
        assert queued_in_redis(shared_redis, layer) == layer.stats()["prefetch_returned"] > 0
        assert 0 < shared_redis.pttl(layer.keys.channel(CHANNEL)) <= 30_000


async def test_messages_taken_ahead_go_back_when_nobody_receives_for_the_block_timeout(shared_redis, monkeypatch):
    async with layer_on(RedisChannelLayer, capacity=200) as layer:
        monkeypatch.setattr(layer, "_settings", type(layer._settings)(unavailable_timeout=5.0, block_timeout=0.3))
        await send_numbered(layer, 100)
        [await receive(layer) for _ in range(40)]
        assert layer.stats()["local_queued"] > 0
        for _ in range(40):
            if layer.stats()["local_queued"] == 0:
                break
            await asyncio.sleep(0.1)
        assert layer.stats()["local_queued"] == 0
        assert queued_in_redis(shared_redis, layer) == 60
        assert (await receive(layer))["n"] == 40


async def test_two_workers_share_a_backlog_without_losing_or_repeating_a_message():
    async with processes_on(RedisChannelLayer, capacity=1000) as (first, second):
        await send_numbered(first, 500)
        got: list[int] = []

        async def work(layer) -> None:
            while len(got) < 500:
                try:
                    message = await asyncio.wait_for(layer.receive(CHANNEL), 1)
                except TimeoutError:
                    return
                got.append(message["n"])

        await asyncio.gather(work(first), work(second))
        assert sorted(got) == list(range(500))


@pytest.mark.parametrize("value", [0, -1, 2.5, "8", True])
def test_prefetch_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match="prefetch must be an int"):
        RedisChannelLayer(hosts=["redis://127.0.0.1:6379/0"], prefetch=value)


def test_stats_count_messages_given_back_and_lost_from_the_start():
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:6379/0"])
    assert layer.stats()["prefetch_returned"] == 0
    assert layer.stats()["prefetch_lost"] == 0


async def test_messages_taken_ahead_that_cannot_go_back_are_counted_and_logged_as_lost(redis_servers, caplog):
    server = redis_servers.start()
    async with processes_on(RedisChannelLayer, 1, hosts=[server.url], capacity=200, unavailable_timeout=0.3) as (
        layer,
    ):
        await send_numbered(layer, 100)
        [await receive(layer) for _ in range(40)]
        taken_ahead = layer.stats()["local_queued"]
        assert taken_ahead > 0
        server.kill()
        with caplog.at_level(logging.WARNING, logger="tether.layers.redis"):
            await layer.close()
        assert layer.stats()["prefetch_lost"] == taken_ahead
        assert f"{taken_ahead} message(s) popped ahead for channel 'jobs' were lost" in caplog.text


async def test_a_message_sent_while_a_waiting_worker_closes_is_delivered_or_left_for_others():
    # close() unblocks the worker's pop instead of cutting its connection, so a message Redis hands out at that
    # moment reaches the worker's receiver or goes back to the list; it is never popped into a closed socket.
    async with processes_on(RedisChannelLayer) as (worker, other):
        sent, got_by_worker = 0, 0
        for number in range(30):
            waiting = asyncio.ensure_future(worker.receive(CHANNEL))
            await asyncio.sleep(0.01)  # the worker's reader is blocked in its pop
            # The send goes out first: Redis hands the message to the worker's pop as the worker closes.
            await asyncio.gather(other.send(CHANNEL, {"type": "job", "n": number}), worker.close())
            sent += 1
            await asyncio.sleep(0.01)
            if waiting.done():
                got_by_worker += 1
            else:
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
        got_by_other = 0
        while True:
            try:
                await asyncio.wait_for(other.receive(CHANNEL), 0.5)
            except asyncio.TimeoutError:
                break
            got_by_other += 1
        assert got_by_worker + got_by_other == sent
