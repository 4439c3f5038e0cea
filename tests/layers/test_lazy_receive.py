"""Lazy receivers: a consumer reads its layer channel only once something was sent to it (``BaseChannelLayer.watch``,
``tether.dispatch.LazySource``), and a message sent before its reader starts is never lost.

The layer tests run once per backend of ``tests/layers/conftest.py``; the consumer tests on the in-memory and the Redis
layer. Waits are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from django.test import override_settings

from tests.layers.conftest import REDIS_URL, eventually
from tether.dispatch import await_many_dispatch
from tether.exceptions import StopConsumer
from tether.generic.websocket import AsyncWebsocketConsumer
from tether.layers import get_channel_layer
from tether.testing import WebsocketCommunicator

WAIT = 5  # seconds: the most any single wait in these tests may take before the test fails


# The layers ---------------------------------------------------------------------------------------------------------


async def test_a_watched_channel_calls_back_when_a_message_is_sent_and_keeps_it(layer):
    channel = await layer.new_channel()
    called = asyncio.Event()
    assert layer.watch(channel, called.set)
    await layer.send(channel, {"type": "lazy.first", "n": 1})
    await asyncio.wait_for(called.wait(), WAIT)
    assert await asyncio.wait_for(layer.receive(channel), WAIT) == {"type": "lazy.first", "n": 1}


async def test_a_channel_watched_after_its_message_arrived_calls_back_too(layer):
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "lazy.early"})
    calls = []
    assert layer.watch(channel, lambda: calls.append(channel))
    await eventually(lambda: calls)
    assert await asyncio.wait_for(layer.receive(channel), WAIT) == {"type": "lazy.early"}
    assert calls == [channel]


async def test_a_watch_calls_back_once_for_several_messages(layer):
    channel = await layer.new_channel()
    calls = []
    assert layer.watch(channel, lambda: calls.append(channel))
    for n in range(3):
        await layer.send(channel, {"type": "lazy.many", "n": n})
    got = [await asyncio.wait_for(layer.receive(channel), WAIT) for _ in range(3)]
    assert [message["n"] for message in got] == [0, 1, 2]
    assert calls == [channel]


async def test_an_unwatched_channel_is_not_called_back_and_keeps_its_message(layer):
    channel = await layer.new_channel()
    calls = []
    assert layer.watch(channel, lambda: calls.append(channel))
    layer.unwatch(channel)
    await layer.send(channel, {"type": "lazy.unwatched"})
    assert await asyncio.wait_for(layer.receive(channel), WAIT) == {"type": "lazy.unwatched"}
    assert calls == []


async def test_a_redis_layer_does_not_forget_a_watched_channel_that_nobody_receives_on():
    redis = pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    from tests.layers.redis.conftest import processes_on

    async with processes_on(redis.RedisChannelLayer, count=2, hosts=[REDIS_URL]) as (here, there):
        channel = await here.new_channel()
        calls = []
        assert here.watch(channel, lambda: calls.append(channel))
        later = time.monotonic() + 10 * here.expiry
        here._own.forget_idle(later)
        here._own.forget_idle(later + 10 * here.expiry)  # two looks without a buffer would forget an unwatched one
        await there.send(channel, {"type": "lazy.kept"})
        await eventually(lambda: calls)
        assert await asyncio.wait_for(here.receive(channel), WAIT) == {"type": "lazy.kept"}


async def test_a_redis_layer_does_not_watch_a_named_channel():
    redis = pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    from tests.layers.redis.conftest import layer_on

    async with layer_on(redis.RedisChannelLayer) as layer:
        assert not layer.watch("lazy.named", lambda: None)


# The dispatch loop --------------------------------------------------------------------------------------------------


class QueueSource:
    """A lazy source on an asyncio.Queue: ``put`` queues a message and calls the armed start, as a layer does."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.start = None
        self.disarmed = False

    def __call__(self):
        return self.queue.get()

    def arm(self, start) -> None:
        self.start = start

    def disarm(self) -> None:
        self.disarmed = True
        self.start = None

    def put(self, message) -> None:
        self.queue.put_nowait(message)
        start, self.start = self.start, None
        if start is not None:
            start(self)


async def test_a_lazy_source_is_read_from_its_first_message_and_keeps_what_came_first():
    client: asyncio.Queue = asyncio.Queue()
    lazy = QueueSource()
    got: list = []

    async def dispatch(message):
        got.append(message)
        if message == "stop":
            raise StopConsumer

    running = asyncio.create_task(await_many_dispatch([client.get], dispatch, lazy=[lazy]))
    await eventually(lambda: lazy.start is not None)
    assert _readers() == 0  # the loop's own task waits on its client
    lazy.put("first")
    lazy.put("second")  # queued before the reader's first receive: read after the first
    await eventually(lambda: len(got) == 2)
    assert got == ["first", "second"]
    client.put_nowait("stop")
    with contextlib.suppress(StopConsumer):
        await asyncio.wait_for(running, WAIT)
    assert _readers() == 0


async def test_a_lazy_source_never_started_is_disarmed_when_the_loop_ends():
    client: asyncio.Queue = asyncio.Queue()
    lazy = QueueSource()

    async def dispatch(message):
        raise StopConsumer

    running = asyncio.create_task(await_many_dispatch([client.get], dispatch, lazy=[lazy]))
    await eventually(lambda: lazy.start is not None)
    start = lazy.start
    client.put_nowait("stop")
    with contextlib.suppress(StopConsumer):
        await asyncio.wait_for(running, WAIT)
    assert lazy.disarmed
    start(lazy)  # a start that comes after the end starts nothing
    assert _readers() == 0


# Consumers ----------------------------------------------------------------------------------------------------------


class ChannelEcho(AsyncWebsocketConsumer):
    """Tells its client its channel name on connect, and passes on what reaches that channel."""

    async def connect(self):
        await self.accept()
        await self.send(text_data=self.channel_name)

    async def lazy_note(self, message):
        await self.send(text_data=message["text"])


class SendsToItselfFirst(ChannelEcho):
    """Sends to its own channel before accepting: the message is there before anything reads the channel."""

    async def connect(self):
        await self.channel_layer.send(self.channel_name, {"type": "lazy.note", "text": "sent before the reader"})
        await super().connect()


def _readers() -> int:
    """How many dispatch readers (one per source being read) are running now."""
    return sum(1 for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "_DispatchLoop.read")


def _runners() -> int:
    """How many dispatch runners (the task that runs a loop's handlers once they wait) are running now."""
    return sum(1 for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "_DispatchLoop.one_at_a_time")


@pytest.fixture(params=["inmemory", "redis"])
def layer_setting(request):
    if request.param == "inmemory":
        return {"BACKEND": "tether.layers.InMemoryChannelLayer"}
    pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    from tests.layers.redis.conftest import new_prefix

    return {
        "BACKEND": "tether.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": new_prefix()},
    }


@contextlib.asynccontextmanager
async def connected(consumer: type[AsyncWebsocketConsumer], layer_setting) -> AsyncIterator[WebsocketCommunicator]:
    with override_settings(CHANNEL_LAYERS={"default": layer_setting}):
        communicator = WebsocketCommunicator(consumer.as_asgi(), "/lazy/")
        try:
            connected, _ = await communicator.connect(timeout=WAIT)
            assert connected
            yield communicator
        finally:
            await communicator.disconnect(timeout=WAIT)
            layer = get_channel_layer()
            await layer.flush()
            await layer.close()


async def test_an_idle_consumer_has_no_reader_or_runner_task(layer_setting):
    before = _readers(), _runners()
    async with connected(ChannelEcho, layer_setting) as communicator:
        await communicator.receive_from(timeout=WAIT)
        assert (_readers(), _runners()) == before  # the connection's own task waits on its client


async def test_a_message_to_an_idle_consumer_starts_its_reader_and_arrives(layer_setting):
    async with connected(ChannelEcho, layer_setting) as communicator:
        channel = await communicator.receive_from(timeout=WAIT)
        before = _readers()
        await get_channel_layer().send(channel, {"type": "lazy.note", "text": "hello"})
        assert await communicator.receive_from(timeout=WAIT) == "hello"
        assert _readers() - before == 1
        await get_channel_layer().send(channel, {"type": "lazy.note", "text": "again"})
        assert await communicator.receive_from(timeout=WAIT) == "again"


async def test_a_message_sent_before_the_reader_starts_is_not_lost(layer_setting):
    async with connected(SendsToItselfFirst, layer_setting) as communicator:
        received = {await communicator.receive_from(timeout=WAIT), await communicator.receive_from(timeout=WAIT)}
        assert "sent before the reader" in received
