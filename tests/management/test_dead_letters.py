"""manage.py tether_dead_letters: list, show, requeue and purge a durable channel's dead letters on a real Redis."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from tests.layers.conftest import REDIS_URL
from tether.layers.redis import RedisChannelLayer


@pytest.fixture
def durable_settings():
    """CHANNEL_LAYERS with a durable ``jobs`` channel under a prefix of the test's own, and a layer built the same
    way that has made two dead letters there (deleted afterwards)."""
    config = {"hosts": [REDIS_URL], "prefix": f"tether-test-dead-{uuid.uuid4().hex[:12]}", "durable": ["jobs"]}
    config["max_attempts"] = 1
    layer = RedisChannelLayer(**config)

    async def make_dead_letters():
        for number in (1, 2):
            await layer.send("jobs", {"type": "job.run", "n": number})
            await (await layer.receive("jobs")).nack(RuntimeError(f"job {number} broke"))
        await layer.close()

    async_to_sync(make_dead_letters)()
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.redis.RedisChannelLayer", "CONFIG": config}}
    ):
        yield layer
    async_to_sync(layer.flush)()
    async_to_sync(layer.close)()


def run(*args) -> str:
    out = StringIO()
    call_command("tether_dead_letters", *args, stdout=out)
    return out.getvalue()


def test_list_gives_one_line_per_dead_letter_with_its_last_error(durable_settings):
    lines = run("list", "jobs").splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("0: 'job.run', 1 attempt(s), dead since ")
    assert lines[0].endswith("RuntimeError: job 1 broke")


def test_show_prints_the_message_as_json(durable_settings):
    output = run("show", "jobs", "--index", "1")
    assert '"n": 2' in output


def test_show_past_the_end_says_how_many_there_are(durable_settings):
    with pytest.raises(CommandError, match=r"no dead letter at index 5 \(2 in all\)"):
        run("show", "jobs", "--index", "5")


def test_requeue_sends_them_to_the_channel_again(durable_settings):
    assert run("requeue", "jobs") == "Requeued 2 dead letter(s) on 'jobs'.\n"
    assert run("list", "jobs") == "No dead letters on 'jobs'.\n"

    async def receive_both():
        return [(await durable_settings.receive("jobs"))["n"] for _ in range(2)]

    assert async_to_sync(receive_both)() == [1, 2]


def test_purge_deletes_them(durable_settings):
    assert run("purge", "jobs") == "Purged 2 dead letter(s) from 'jobs'.\n"
    assert run("list", "jobs") == "No dead letters on 'jobs'.\n"


def test_a_channel_that_is_not_durable_is_refused_with_where_to_look():
    with pytest.raises(CommandError, match=r"Channel 'jobs' is not durable .* listed in the layer's 'durable' option"):
        run("list", "jobs")
