"""manage.py runworker: refusals in-process, and a real worker subprocess serving a channel through Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid

import pytest
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from django.test import override_settings

from tests.project.harness import Command, copy_project, run_command
from tether.management.commands.runworker import Command as RunworkerCommand


def redis_layer_class():
    """tether's Redis layer, or a skip while it is not there yet."""
    module = pytest.importorskip("tether.layers.redis")
    layer_class = getattr(module, "RedisChannelLayer", None)
    if layer_class is None:
        pytest.skip("tether.layers.redis has no RedisChannelLayer yet")
    return layer_class


def test_in_memory_layer_is_refused_with_what_to_configure():
    with pytest.raises(CommandError, match="is the in-memory layer, which lives inside one process") as caught:
        call_command("runworker", "jobs")
    assert "tether.layers.redis.RedisChannelLayer" in str(caught.value)


def test_missing_layer_alias_is_refused_with_what_to_configure():
    with pytest.raises(CommandError, match="No channel layer is configured under the alias 'workers'") as caught:
        call_command("runworker", "--layer", "workers", "jobs")
    assert "CHANNEL_LAYERS = {" in str(caught.value)


@override_settings(CHANNEL_LAYERS={})
def test_no_channel_layers_at_all_is_refused():
    with pytest.raises(CommandError, match="No channel layer is configured under the alias 'default'"):
        call_command("runworker", "jobs")


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.NoSuchLayer"}})
def test_backend_that_cannot_be_imported_is_a_command_error():
    with pytest.raises(CommandError, match=r"Cannot import BACKEND 'tether\.layers\.NoSuchLayer'"):
        call_command("runworker", "jobs", skip_checks=True)


def test_tether_provides_runworker_when_installed():
    assert get_commands()["runworker"] == "tether"


@override_settings(INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"])
def test_tethers_runworker_without_tether_installed_says_to_install_it():
    with pytest.raises(CommandError, match='needs "tether" in INSTALLED_APPS'):
        call_command(RunworkerCommand(), "jobs", skip_checks=True)


def test_runworker_needs_a_channel_name():
    with pytest.raises(CommandError, match="the following arguments are required: channels"):
        call_command("runworker")


def test_runworker_with_the_in_memory_layer_exits_with_the_explanation(tmp_path):
    project = copy_project(tmp_path)
    code, output = run_command(project, "runworker", "jobs")
    assert code == 1
    assert "CommandError: The channel layer 'default' is the in-memory layer" in output


@contextlib.asynccontextmanager
async def worker_process(tmp_path):
    """``runworker jobs`` in a subprocess on the shared Redis under a prefix of its own, and a layer to talk to it;
    both stopped, and the prefix's keys deleted, afterwards."""
    layer_class = redis_layer_class()
    prefix = f"tether-test-runworker-{uuid.uuid4().hex[:12]}"
    command = Command(copy_project(tmp_path), "runworker", "jobs", PROJECT_REDIS_PREFIX=prefix)
    layer = layer_class(hosts=["redis://127.0.0.1:6379/0"], prefix=prefix)
    try:
        yield command, layer
    finally:
        command.stop()
        await layer.flush()
        await layer.close()


async def test_runworker_serves_a_channel_in_order_with_one_instance_then_stops_on_sigterm(tmp_path):
    async with worker_process(tmp_path) as (command, layer):
        banner = await asyncio.to_thread(command.wait_for_line, "tether worker serving")
        assert "serving jobs on layer 'default' (RedisChannelLayer)" in banner

        reply_to = await layer.new_channel()
        for number in range(10):
            await layer.send("jobs", {"type": "job.run", "number": number, "reply_to": reply_to})
        answers = [await asyncio.wait_for(layer.receive(reply_to), timeout=15) for _ in range(10)]
        assert [answer["number"] for answer in answers] == list(range(10))
        assert len({answer["instance"] for answer in answers}) == 1

        command.signal(signal.SIGTERM)
        assert await asyncio.to_thread(command.wait, 15) == 0, command.output


async def test_runworker_on_sigterm_finishes_the_job_in_progress_and_loses_no_message(tmp_path):
    """Each job says it started, takes 0.2 s, then says it is done; SIGTERM arrives during the third. Every job is
    done or still in Redis afterwards, in order, and the one in progress was finished, not cancelled."""
    async with worker_process(tmp_path) as (command, layer):
        await asyncio.to_thread(command.wait_for_line, "tether worker serving")
        reply_to = await layer.new_channel()
        for number in range(20):
            await layer.send("jobs", {"type": "job.run", "number": number, "seconds": 0.2, "reply_to": reply_to})
        replies = []
        while len([reply for reply in replies if reply["type"] == "job.started"]) < 3:
            replies.append(await asyncio.wait_for(layer.receive(reply_to), timeout=15))
        command.signal(signal.SIGTERM)
        assert await asyncio.to_thread(command.wait, 15) == 0, command.output
        replies += await receive_all(layer, reply_to)
        started = [reply["number"] for reply in replies if reply["type"] == "job.started"]
        done = [reply["number"] for reply in replies if reply["type"] == "job.done"]
        assert done == started  # nothing that started was cancelled
        left = [message["number"] for message in await receive_all(layer, "jobs")]
        assert done + left == list(range(20)), command.output


async def receive_all(layer, channel):
    """The messages waiting on ``channel``: received until none comes for a second."""
    messages = []
    while True:
        try:
            messages.append(await asyncio.wait_for(layer.receive(channel), timeout=1))
        except asyncio.TimeoutError:
            return messages


def test_runworker_refuses_a_negative_stop_timeout():
    with pytest.raises(CommandError, match=r"--stop-timeout must be a number of seconds, 0 or more, not -1\.0"):
        call_command("runworker", "--stop-timeout", "-1", "jobs", skip_checks=True)
