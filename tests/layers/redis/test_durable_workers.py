"""Durable channels with real ``runworker`` processes on the shared Redis: a worker killed without warning loses
nothing; the next one handles what it held, after the visibility timeout (1 s here)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid

from tests.layers.conftest import REDIS_URL
from tests.project.harness import Command, copy_project
from tether.layers.redis import RedisChannelLayer

JOBS = 300


@contextlib.asynccontextmanager
async def durable_jobs(tmp_path):
    """A layer like the workers' (``jobs`` durable), and a function starting a ``runworker jobs`` process."""
    prefix = f"tether-test-durable-{uuid.uuid4().hex[:12]}"
    project = copy_project(tmp_path)
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix, durable=["jobs"], visibility_timeout=1, capacity=10_000)
    workers: list[Command] = []

    async def start_worker() -> Command:
        worker = Command(project, "runworker", "jobs", PROJECT_REDIS_PREFIX=prefix, PROJECT_DURABLE="jobs")
        workers.append(worker)
        await asyncio.to_thread(worker.wait_for_line, "tether worker serving")
        return worker

    try:
        yield layer, start_worker
    finally:
        for worker in workers:
            worker.stop()
        await layer.flush()
        await layer.close()


async def collect(layer, reply_to, until, timeout: float = 30) -> list[dict]:
    """Replies on ``reply_to`` until ``until(replies)`` holds; fails after ``timeout`` seconds."""
    replies: list[dict] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not until(replies):
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"gave up with {len(replies)} replies"
        replies.append(await asyncio.wait_for(layer.receive(reply_to), left))
    return replies


def done_numbers(replies) -> list[int]:
    return [reply["number"] for reply in replies if reply["type"] == "job.done"]


async def test_a_worker_killed_mid_stream_loses_no_job(tmp_path):
    async with durable_jobs(tmp_path) as (layer, start_worker):
        first = await start_worker()
        reply_to = await layer.new_channel()
        for number in range(JOBS):
            await layer.send("jobs", {"type": "job.run", "number": number, "reply_to": reply_to})
        replies = await collect(layer, reply_to, lambda got: len(got) >= JOBS // 3)
        first.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
        await start_worker()
        replies += await collect(layer, reply_to, lambda got: set(done_numbers(replies + got)) == set(range(JOBS)))
        assert len(done_numbers(replies)) - JOBS <= 64 + 3  # duplicates: at most what the first one had in hand


async def test_a_worker_killed_in_the_middle_of_a_handler_has_that_job_done_by_the_next(tmp_path):
    async with durable_jobs(tmp_path) as (layer, start_worker):
        first = await start_worker()
        reply_to = await layer.new_channel()
        await layer.send("jobs", {"type": "job.run", "number": 7, "seconds": 30, "reply_to": reply_to})
        [started] = await collect(layer, reply_to, lambda got: len(got) == 1)
        assert started["type"] == "job.started"
        first.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
        await start_worker()
        # Delivered again once the visibility timeout has passed, and started over.
        await collect(layer, reply_to, lambda got: {"type": "job.started", "number": 7} in got, timeout=15)
