"""tether.worker.Worker, in-process with the in-memory layer: one instance per channel, in order, restarts, bounds."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

import pytest

from tests.layers.conftest import eventually
from tether.consumer import AsyncConsumer
from tether.exceptions import StopConsumer
from tether.layers import get_channel_layer
from tether.routing import ChannelNameRouter, ProtocolTypeRouter
from tether.worker import Worker

#: A number per consumer instance: ``id()`` may be given again to an instance made after the last one was freed.
SERIALS = itertools.count()


class Recorder(AsyncConsumer):
    """Reports each message it handles to ``replies`` with a number of its own, so tests see which instance handled
    what."""

    async def job_run(self, message):
        if not hasattr(self, "serial"):
            self.serial = next(SERIALS)
        await self.channel_layer.send("replies", {"type": "done", "number": message["number"], "instance": self.serial})

    async def job_crash(self, message):
        raise RuntimeError("the handler failed")

    async def job_stop(self, message):
        raise StopConsumer

    async def job_talk_back(self, message):
        await self.send({"type": "websocket.send", "text": "nobody is listening"})


class Blocker(AsyncConsumer):
    """Waits on ``release`` in every handler, so tests can hold a message in flight."""

    release: asyncio.Event | None = None

    async def job_run(self, message):
        await self.release.wait()


def app_for(**channels):
    return ProtocolTypeRouter({"channel": ChannelNameRouter(channels)})


@contextlib.asynccontextmanager
async def running(worker):
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def replies(layer, count):
    return [await asyncio.wait_for(layer.receive("replies"), timeout=2) for _ in range(count)]


@pytest.fixture
async def jobs_worker():
    """A worker serving ``Recorder`` on the channel ``jobs`` of the default layer, running for the whole test."""
    async with running(Worker(app_for(jobs=Recorder.as_asgi()), ["jobs"], get_channel_layer())) as task:
        yield task


async def test_messages_to_one_channel_are_handled_in_order_by_one_instance(jobs_worker):
    layer = get_channel_layer()
    for number in range(20):
        await layer.send("jobs", {"type": "job.run", "number": number})
    answers = await replies(layer, 20)
    assert [answer["number"] for answer in answers] == list(range(20))
    assert len({answer["instance"] for answer in answers}) == 1


async def test_each_channel_gets_its_own_instance():
    layer = get_channel_layer()
    app = app_for(first=Recorder.as_asgi(), second=Recorder.as_asgi())
    async with running(Worker(app, ["first", "second"], layer)):
        await layer.send("first", {"type": "job.run", "number": 1})
        await layer.send("second", {"type": "job.run", "number": 2})
        await layer.send("first", {"type": "job.run", "number": 3})
        answers = {answer["number"]: answer["instance"] for answer in await replies(layer, 3)}
    assert answers[1] == answers[3]
    assert answers[1] != answers[2]


async def test_the_application_gets_a_channel_scope_naming_its_channel():
    layer = get_channel_layer()
    scopes = []

    async def app(scope, receive, send):
        scopes.append(scope)
        await receive()
        await layer.send("replies", {"type": "seen"})

    async with running(Worker(app, ["jobs"], layer)):
        await layer.send("jobs", {"type": "job.run"})
        await replies(layer, 1)
    assert scopes == [{"type": "channel", "channel": "jobs"}]


async def test_an_instance_whose_handler_raised_is_logged_and_replaced_for_the_next_message(jobs_worker, caplog):
    layer = get_channel_layer()
    await layer.send("jobs", {"type": "job.run", "number": 1})
    [before] = await replies(layer, 1)
    with caplog.at_level(logging.ERROR, logger="tether.worker"):
        await layer.send("jobs", {"type": "job.crash"})
        await layer.send("jobs", {"type": "job.run", "number": 2})
        [after] = await replies(layer, 1)
    assert after["number"] == 2
    assert after["instance"] != before["instance"]
    assert "while serving channel 'jobs'" in caplog.text
    assert "the handler failed" in caplog.text


async def test_a_message_without_a_handler_ends_the_instance_and_the_worker_keeps_serving(jobs_worker, caplog):
    layer = get_channel_layer()
    with caplog.at_level(logging.ERROR, logger="tether.worker"):
        await layer.send("jobs", {"type": "job.unknown"})
        await layer.send("jobs", {"type": "job.run", "number": 7})
        [answer] = await replies(layer, 1)
    assert answer["number"] == 7
    assert "no handler for message type 'job.unknown'" in caplog.text


async def test_an_instance_that_stops_is_replaced_for_the_next_message(jobs_worker):
    layer = get_channel_layer()
    await layer.send("jobs", {"type": "job.run", "number": 1})
    [before] = await replies(layer, 1)
    await layer.send("jobs", {"type": "job.stop"})
    await layer.send("jobs", {"type": "job.run", "number": 2})
    [after] = await replies(layer, 1)
    assert after["instance"] != before["instance"]


async def test_sending_to_a_client_from_a_worker_is_an_error_naming_the_channel(jobs_worker, caplog):
    layer = get_channel_layer()
    with caplog.at_level(logging.ERROR, logger="tether.worker"):
        await layer.send("jobs", {"type": "job.talk_back"})
        await layer.send("jobs", {"type": "job.run", "number": 1})
        await replies(layer, 1)
    assert "worker application for channel 'jobs' tried to send 'websocket.send'" in caplog.text


async def test_a_busy_instance_leaves_its_backlog_in_the_layer():
    layer = get_channel_layer()
    release = asyncio.Event()
    async with running(Worker(app_for(jobs=Blocker.as_asgi(release=release)), ["jobs"], layer)):
        for number in range(10):
            await layer.send("jobs", {"type": "job.run", "number": number})
        await asyncio.sleep(0.1)
        # One message in the handler, two read ahead by the consumer, one in the hand-over queue and one that the
        # worker holds until there is room: the other five are still in the layer.
        assert layer.stats()["received"] <= 5
        release.set()
        for _ in range(200):
            if layer.stats()["received"] == 10:
                break
            await asyncio.sleep(0.01)
        assert layer.stats()["received"] == 10


async def test_cancelling_run_stops_every_instance():
    layer = get_channel_layer()
    release = asyncio.Event()
    started = []

    async def app(scope, receive, send):
        started.append(scope["channel"])
        try:
            await receive()
            await release.wait()
        finally:
            started.remove(scope["channel"])

    worker = Worker(app, ["a", "b"], layer)
    task = asyncio.create_task(worker.run())
    await layer.send("a", {"type": "x"})
    await layer.send("b", {"type": "x"})
    for _ in range(100):
        if len(started) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(started) == ["a", "b"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert started == []


def test_a_worker_needs_at_least_one_channel():
    with pytest.raises(ValueError, match="at least one channel"):
        Worker(app_for(), [], get_channel_layer())


def test_a_worker_refuses_a_process_local_channel_name():
    with pytest.raises(TypeError, match="contains '!', which marks a channel local to one process"):
        Worker(app_for(), ["jobs!abc"], get_channel_layer())


def test_a_worker_refuses_an_invalid_channel_name():
    with pytest.raises(TypeError, match="is invalid"):
        Worker(app_for(), ["no spaces allowed"], get_channel_layer())


def test_a_worker_takes_channels_max_applications_and_refuses_a_useless_one():
    assert Worker(app_for(), ["jobs"], get_channel_layer(), max_applications=5).max_applications == 5
    with pytest.raises(ValueError, match="max_applications must be a positive int"):
        Worker(app_for(), ["jobs"], get_channel_layer(), max_applications=0)


def test_a_worker_listens_once_on_a_channel_named_twice():
    assert Worker(app_for(), ["jobs", "mail", "jobs"], get_channel_layer()).channels == ["jobs", "mail"]


# Stopping gracefully ---------------------------------------------------------------------------------------------


def taken_all(layer, channel):
    """Every message still waiting on ``channel`` of the in-memory layer, taken off it."""
    waiting = layer.channels.get(channel)
    return [waiting.get_nowait() for _ in range(waiting.qsize())] if waiting is not None else []


async def test_stop_handles_every_message_the_worker_took_and_leaves_the_rest_in_the_layer():
    layer = get_channel_layer()
    release = asyncio.Event()
    handled = []

    class Counting(Blocker):
        async def job_run(self, message):
            await release.wait()
            handled.append(message["number"])

    worker = Worker(app_for(jobs=Counting.as_asgi()), ["jobs"], layer)
    run = asyncio.create_task(worker.run())
    for number in range(10):
        await layer.send("jobs", {"type": "job.run", "number": number})
    await eventually(lambda: layer.stats()["received"] >= 2)
    stop = asyncio.create_task(worker.stop(timeout=5))
    await asyncio.sleep(0.05)
    assert not stop.done()  # the handler in progress is waited for
    release.set()
    await asyncio.wait_for(stop, 5)
    await asyncio.wait_for(run, 5)
    left = [message["number"] for _, message in taken_all(layer, "jobs")]
    assert handled + left == list(range(10))
    assert handled


async def test_stop_cancels_a_handler_still_busy_after_the_timeout_and_says_so(caplog):
    layer = get_channel_layer()
    worker = Worker(app_for(jobs=Blocker.as_asgi(release=asyncio.Event())), ["jobs"], layer)
    run = asyncio.create_task(worker.run())
    await layer.send("jobs", {"type": "job.run", "number": 1})
    await eventually(lambda: layer.stats()["received"] == 1)
    with caplog.at_level(logging.WARNING, logger="tether.worker"):
        await asyncio.wait_for(worker.stop(timeout=0.1), 5)
    await asyncio.wait_for(run, 5)
    assert "the instance serving 'jobs' was still busy after 0.1s: cancelling it" in caplog.text


async def test_stop_ends_an_idle_worker_at_once_without_taking_a_message():
    layer = get_channel_layer()
    worker = Worker(app_for(jobs=Recorder.as_asgi(), other=Recorder.as_asgi()), ["jobs", "other"], layer)
    run = asyncio.create_task(worker.run())
    await layer.send("jobs", {"type": "job.run", "number": 1})
    await replies(layer, 1)
    await asyncio.wait_for(worker.stop(), 2)
    await asyncio.wait_for(run, 2)
    await layer.send("jobs", {"type": "job.run", "number": 2})
    assert [message["number"] for _, message in taken_all(layer, "jobs")] == [2]
