"""Redis going away and coming back, on a redis-server the test starts, kills and restarts (never the shared one)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import pytest

from tether.exceptions import LayerUnavailable
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

from .conftest import processes_on

WAIT = 10
LAYERS = [RedisChannelLayer, RedisPubSubChannelLayer]


async def send_until_delivered(sender, channel, message, deadline: float) -> None:
    """Send until Redis takes it (it may still be restarting); LayerUnavailable until then."""
    while True:
        try:
            await sender.send(channel, message)
            return
        except LayerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_a_send_while_redis_is_down_raises_layer_unavailable_after_the_bounded_wait(redis_servers, layer_class):
    server = redis_servers.start()
    async with processes_on(layer_class, 1, hosts=[server.url], unavailable_timeout=0.5) as (layer,):
        await layer.send("before", {"type": "ok"})
        server.kill()
        started = time.monotonic()
        with pytest.raises(LayerUnavailable, match=r"could not be reached|broke during"):
            await layer.send("during", {"type": "lost"})
        assert time.monotonic() - started < 5
        with pytest.raises(LayerUnavailable):
            await layer.group_send("room", {"type": "lost"})


async def test_nothing_listens_on_a_host_that_never_started_and_the_error_says_where(redis_servers):
    from .conftest import free_port

    port = free_port()
    async with processes_on(RedisChannelLayer, 1, hosts=[f"redis://127.0.0.1:{port}"], unavailable_timeout=0.3) as (
        layer,
    ):
        with pytest.raises(LayerUnavailable, match=f"127.0.0.1:{port}.*unavailable_timeout"):
            await layer.group_add("room", "worker")


@pytest.mark.parametrize("layer_class", LAYERS)
async def test_receivers_ride_out_a_redis_restart_and_carry_on(redis_servers, layer_class, caplog):
    server = redis_servers.start()
    async with processes_on(layer_class, 2, hosts=[server.url], unavailable_timeout=0.5) as (sender, receiver):
        local = await receiver.new_channel()
        await receiver.group_add("room", local)
        await sender.send(local, {"type": "before", "n": 0})
        assert (await asyncio.wait_for(receiver.receive(local), WAIT))["n"] == 0
        waiting = asyncio.ensure_future(receiver.receive(local))
        await asyncio.sleep(0.1)

        with caplog.at_level(logging.WARNING, logger="tether.layers.redis"):
            server.kill()
            await asyncio.sleep(0.5)  # the receive loop notices and starts backing off
            server.start()
            deadline = time.monotonic() + WAIT
            # Redis lost everything (no persistence): join the group again, as a reconnecting client would.
            while True:
                try:
                    await receiver.group_add("room", local)
                    break
                except LayerUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            await send_until_delivered(sender, local, {"type": "after", "n": 1}, deadline)
            while not waiting.done():  # pub/sub: published before the subscriber was back means gone
                assert time.monotonic() < deadline, "the receive loop did not come back"
                await asyncio.sleep(0.2)
                if not waiting.done():
                    await sender.send(local, {"type": "after", "n": 1})
        assert (await waiting)["type"] == "after"
        assert receiver.stats()["reconnects"] >= 1
        assert any("Lost Redis" in record.getMessage() for record in caplog.records)

        await sender.group_send("room", {"type": "group.after"})
        got = await asyncio.wait_for(receiver.receive(local), WAIT)
        while got["type"] == "after":  # extra copies sent while waiting for the loop to come back
            got = await asyncio.wait_for(receiver.receive(local), WAIT)
        assert got == {"type": "group.after"}


async def test_a_named_channel_reader_rides_out_a_redis_restart(redis_servers):
    server = redis_servers.start()
    async with processes_on(RedisChannelLayer, 2, hosts=[server.url], unavailable_timeout=0.5) as (sender, worker):
        waiting = asyncio.ensure_future(worker.receive("jobs"))
        await asyncio.sleep(0.1)
        server.kill()
        await asyncio.sleep(0.3)
        server.start()
        await send_until_delivered(sender, "jobs", {"type": "job"}, time.monotonic() + WAIT)
        assert await asyncio.wait_for(waiting, WAIT) == {"type": "job"}


async def test_sends_in_flight_during_a_restart_either_arrive_or_raise_never_hang(redis_servers):
    server = redis_servers.start()
    options = {"hosts": [server.url], "unavailable_timeout": 0.5, "capacity": 1000}
    async with processes_on(RedisChannelLayer, 2, **options) as (sender, receiver):
        channel = await receiver.new_channel()
        outcomes: list[str] = []

        async def stream() -> None:
            for number in range(200):
                try:
                    await sender.send(channel, {"type": "n", "n": number})
                    outcomes.append("sent")
                except LayerUnavailable:
                    outcomes.append("unavailable")
                await asyncio.sleep(0.01)

        streaming = asyncio.ensure_future(stream())
        await asyncio.sleep(0.4)
        server.kill()
        await asyncio.sleep(0.3)
        server.start()
        await asyncio.wait_for(streaming, 30)
        assert "unavailable" in outcomes
        assert outcomes[-1] == "sent"
        received = 0
        while True:
            try:
                await asyncio.wait_for(receiver.receive(channel), 1)
            except asyncio.TimeoutError:
                break
            received += 1
        # Messages sent before the kill that Redis held are gone with it (no persistence); after the restart every
        # accepted message arrives.
        assert received >= outcomes[outcomes.index("unavailable") :].count("sent")


async def test_a_redis_that_stops_answering_fails_sends_within_the_socket_timeout(redis_servers):
    server = redis_servers.start()
    host = {"address": server.url, "socket_timeout": 1}
    async with processes_on(RedisChannelLayer, 1, hosts=[host], unavailable_timeout=1) as (layer,):
        await layer.send("jobs", {"type": "before"})
        server.process.send_signal(signal.SIGSTOP)  # connected, but never answers
        try:
            started = time.monotonic()
            with pytest.raises(LayerUnavailable, match="no reply within 1s"):
                await layer.send("jobs", {"type": "during"})
            assert time.monotonic() - started < 4
        finally:
            server.process.send_signal(signal.SIGCONT)
        await layer.send("jobs", {"type": "after"})
        assert await asyncio.wait_for(layer.receive("jobs"), WAIT) == {"type": "before"}


async def test_receive_loops_work_on_a_redis_that_forbids_the_client_command(redis_servers):
    # Some managed Redis services disable CLIENT: close() then cancels receive loops instead of unblocking them.
    server = redis_servers.start("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-client")
    async with processes_on(RedisChannelLayer, 2, hosts=[server.url]) as (worker, sender):
        channel = await worker.new_channel()
        await sender.send("jobs", {"type": "job"})
        await sender.send(channel, {"type": "direct"})
        assert await asyncio.wait_for(worker.receive("jobs"), WAIT) == {"type": "job"}
        assert await asyncio.wait_for(worker.receive(channel), WAIT) == {"type": "direct"}
        waiting = asyncio.ensure_future(worker.receive("jobs"))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(worker.close(), WAIT)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
