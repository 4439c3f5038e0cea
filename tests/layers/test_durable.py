"""Durable channels (the layers' ``durable`` option): at-least-once delivery, on every layer that offers it.

Each test runs on the in-memory layer and on both Redis layers. Times are short (a visibility timeout of a second)
so that redelivery is seen quickly; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.layers.conftest import LAYER_FACTORIES, eventually
from tether.layers.durable import DeadLetter, Delivery

WAIT = 5


@pytest.fixture(params=["inmemory", "redis", "redis_pubsub"])
def durable_layer(request):
    """Build a layer of the parametrised backend whose ``jobs`` and ``mail.*`` channels are durable."""

    def build(**options):
        options.setdefault("durable", ["jobs", "mail.*"])
        options.setdefault("visibility_timeout", 1)
        options.setdefault("max_attempts", 3)
        return LAYER_FACTORIES[request.param](**options)

    return build


async def receive(layer, channel="jobs"):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def test_a_durable_channel_delivers_a_delivery_that_is_the_message(durable_layer):
    async with durable_layer() as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        delivery = await receive(layer)
        assert isinstance(delivery, Delivery)
        assert delivery == {"type": "job", "n": 1}
        assert (delivery.channel, delivery.attempts) == ("jobs", 1)
        await delivery.ack()


async def test_channels_matching_a_pattern_are_durable_and_others_are_not(durable_layer):
    async with durable_layer() as layer:
        await layer.send("mail.outbox", {"type": "mail"})
        await layer.send("thumbnails", {"type": "thumb"})
        assert type(await receive(layer, "mail.outbox")) is Delivery
        assert type(await receive(layer, "thumbnails")) is dict


async def test_an_acknowledged_message_is_not_delivered_again(durable_layer):
    async with durable_layer() as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        await (await receive(layer)).ack()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive("jobs"), 1.6)  # past the visibility timeout


async def test_a_refused_message_is_delivered_again_at_once_with_the_attempt_counted(durable_layer):
    async with durable_layer() as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        await layer.send("jobs", {"type": "job", "n": 2})
        first = await receive(layer)
        await first.nack(RuntimeError("the printer is on fire"))
        again = await receive(layer)
        assert again == {"type": "job", "n": 1}
        assert again.attempts == 2
        assert layer.stats()["redelivered"] == 1


async def test_a_message_not_settled_within_the_visibility_timeout_is_delivered_again(durable_layer):
    async with durable_layer() as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        first = await receive(layer)
        assert first.attempts == 1  # and its receiver dies without a word
        again = await receive(layer)
        assert again == {"type": "job", "n": 1}
        assert again.attempts == 2


async def test_a_message_that_fails_max_attempts_times_becomes_a_dead_letter_counted_and_logged(durable_layer, caplog):
    async with durable_layer() as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        with caplog.at_level(logging.WARNING):
            for attempt in (1, 2, 3):
                delivery = await receive(layer)
                assert delivery.attempts == attempt
                await delivery.nack(ValueError(f"bad input, try {attempt}"))
        [dead] = await layer.dead_letters("jobs")
        assert isinstance(dead, DeadLetter)
        assert (dead.channel, dead.message, dead.attempts) == ("jobs", {"type": "job", "n": 1}, 3)
        assert dead.error == "ValueError: bad input, try 3"
        assert layer.stats()["dead_lettered"] == 1
        assert "'jobs' failed 3 times and was dead-lettered" in caplog.text
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive("jobs"), 0.5)


async def test_dead_letters_can_be_requeued_as_new_messages(durable_layer):
    async with durable_layer(max_attempts=1) as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        await (await receive(layer)).nack("no")
        assert await layer.requeue_dead_letters("jobs") == 1
        assert await layer.dead_letters("jobs") == []
        again = await receive(layer)
        assert again == {"type": "job", "n": 1}
        assert again.attempts == 1


async def test_dead_letters_can_be_purged(durable_layer):
    async with durable_layer(max_attempts=1) as layer:
        for number in range(3):
            await layer.send("jobs", {"type": "job", "n": number})
            await (await receive(layer)).nack("no")
        assert [dead.message["n"] for dead in await layer.dead_letters("jobs")] == [0, 1, 2]
        assert await layer.purge_dead_letters("jobs") == 3
        assert await layer.dead_letters("jobs") == []


async def test_settling_twice_counts_once(durable_layer):
    async with durable_layer() as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        delivery = await receive(layer)
        await delivery.ack()
        await delivery.nack("too late")
        assert delivery.settled
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive("jobs"), 0.3)


async def test_a_copy_of_a_delivery_is_a_plain_message_that_sends_on(durable_layer):
    async with durable_layer() as layer:
        await layer.send("jobs", {"type": "job", "n": 1})
        delivery = await receive(layer)
        await layer.send("thumbnails", delivery)
        forwarded = await receive(layer, "thumbnails")
        assert type(forwarded) is dict and forwarded == {"type": "job", "n": 1}
        assert type(dict(delivery)) is dict
        await delivery.ack()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"durable": "jobs"}, "durable must be a list of channel names or patterns"),
        ({"durable": ["jobs!x"]}, "names process-local channels"),
        ({"durable": {"jobs": {"retries": 3}}}, r"durable\['jobs'\] got unknown option\(s\) \['retries'\]"),
        ({"visibility_timeout": 0}, "visibility_timeout must be a positive number of seconds"),
        ({"max_attempts": 0}, "max_attempts must be a positive int"),
    ],
)
def test_bad_durable_options_are_refused_with_the_reason(options, error):
    from tether.layers import InMemoryChannelLayer

    options.setdefault("durable", ["jobs"])
    with pytest.raises((TypeError, ValueError), match=error):
        InMemoryChannelLayer(**options)


async def test_a_worker_acknowledges_what_its_handler_handled_and_refuses_what_raised(durable_layer):
    from tether.consumer import AsyncConsumer
    from tether.routing import ChannelNameRouter, ProtocolTypeRouter
    from tether.worker import Worker

    handled = []

    class Jobs(AsyncConsumer):
        async def job_run(self, message):
            if message["n"] == 2 and message.attempts == 1:
                raise RuntimeError("first try fails")
            handled.append((message["n"], message.attempts))

    async with durable_layer() as layer:
        Jobs.channel_layer_alias = None
        worker = Worker(ProtocolTypeRouter({"channel": ChannelNameRouter({"jobs": Jobs.as_asgi()})}), ["jobs"], layer)
        run = asyncio.create_task(worker.run())
        try:
            for number in range(1, 4):
                await layer.send("jobs", {"type": "job.run", "n": number})
            await eventually(lambda: len(handled) == 3)
            # 2 came again at once; 3, which the instance that failed had read ahead, after the visibility timeout.
            assert sorted(number for number, _ in handled) == [1, 2, 3]
            assert (2, 2) in handled
            await worker.stop()
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive("jobs"), 1.6)  # nothing left unacknowledged


async def test_a_sync_consumer_in_a_worker_settles_its_messages_too():
    from tests.layers.conftest import inmemory_layer
    from tether.consumer import SyncConsumer
    from tether.routing import ChannelNameRouter, ProtocolTypeRouter
    from tether.worker import Worker

    handled = []

    class Jobs(SyncConsumer):
        channel_layer_alias = None

        def job_run(self, message):
            if message.attempts == 1:
                raise RuntimeError("first try fails")
            handled.append((message["n"], message.attempts))

    async with inmemory_layer(durable=["jobs"], visibility_timeout=1, max_attempts=3) as layer:
        worker = Worker(ProtocolTypeRouter({"channel": ChannelNameRouter({"jobs": Jobs.as_asgi()})}), ["jobs"], layer)
        run = asyncio.create_task(worker.run())
        try:
            await layer.send("jobs", {"type": "job.run", "n": 1})
            await eventually(lambda: handled == [(1, 2)])
            await worker.stop()
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        assert layer.stats()["redelivered"] == 1
