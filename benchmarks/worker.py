"""7. Workers on the Redis layer: throughput of a named channel, at most once and durable, and what a crash loses.

Throughput: ``JOBS`` messages wait on a named channel before a worker starts; the rate is jobs handled per second
until the last one, by a trivial consumer. Three series in the same run: tether's ``Worker`` on a default (at most
once) channel, the same on a durable channel (acknowledged after each handler), and Channels' ``Worker`` with
channels_redis. The target: durable at least half the default's rate.

Crash: ``CRASH_JOBS`` jobs; a worker process records each job it handles in a Redis list, and is SIGKILLed once it has
handled about a fifth of them; a fresh worker (visibility timeout 1 s) then serves the rest. Lost = jobs never
handled; duplicates = handlings beyond one per job. Every run is a fresh process on the benchmark's redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

__all__ = ["run"]

JOBS = 3000
CRASH_JOBS = 5000
CHANNEL = "bench.jobs"
MESSAGE_TEXT = "x" * 70


def _configure_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(INSTALLED_APPS=[], CHANNEL_LAYERS={}, USE_TZ=True)
        django.setup()


def make_layer(stack: str, redis_url: str, prefix: str, capacity: int) -> Any:
    if stack == "channels":
        from channels_redis.core import RedisChannelLayer as ChannelsRedis

        return ChannelsRedis(hosts=[redis_url], prefix=prefix, capacity=capacity)
    from tether.layers.redis import RedisChannelLayer

    durable = [CHANNEL] if stack == "durable" else None
    return RedisChannelLayer(hosts=[redis_url], prefix=prefix, capacity=capacity, durable=durable, visibility_timeout=1)


def make_worker(stack: str, layer: Any, on_job: Any) -> Any:
    """A worker of ``stack`` serving ``CHANNEL`` with a consumer that calls ``on_job(message)`` for each job."""
    if stack == "channels":
        from channels.consumer import AsyncConsumer as ChannelsConsumer
        from channels.routing import ChannelNameRouter as ChannelsRouter
        from channels.worker import Worker as ChannelsWorker

        class ChannelsJobs(ChannelsConsumer):  # type: ignore[misc]
            channel_layer_alias = None

            async def job_run(self, message: dict[str, Any]) -> None:
                await on_job(message)

        return ChannelsWorker(ChannelsRouter({CHANNEL: ChannelsJobs.as_asgi()}), [CHANNEL], layer)
    from tether.consumer import AsyncConsumer
    from tether.routing import ChannelNameRouter
    from tether.worker import Worker

    class Jobs(AsyncConsumer):
        channel_layer_alias = None

        async def job_run(self, message: dict[str, Any]) -> None:
            await on_job(message)

    return Worker(ChannelNameRouter({CHANNEL: Jobs.as_asgi()}), [CHANNEL], layer)


async def throughput(stack: str, redis_url: str, prefix: str, jobs: int) -> dict[str, Any]:
    """Jobs per second of one worker draining ``jobs`` waiting messages."""
    _configure_django()
    layer = make_layer(stack, redis_url, prefix, jobs + 10)
    for number in range(jobs):
        await layer.send(CHANNEL, {"type": "job.run", "n": number, "text": MESSAGE_TEXT})
    done = asyncio.Event()
    handled = 0

    async def on_job(message: dict[str, Any]) -> None:
        nonlocal handled
        handled += 1
        if handled == jobs:
            done.set()

    worker = make_worker(stack, layer, on_job)
    started = time.monotonic()
    running = asyncio.ensure_future(worker.arun() if stack == "channels" else worker.run())
    try:
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.monotonic() - started
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await _close(layer)
    return {"jobs_per_s": jobs / elapsed}


async def crash_worker(stack: str, redis_url: str, prefix: str) -> None:
    """Serve ``CHANNEL`` forever, recording each job handled in the Redis list ``<prefix>handled``."""
    import redis.asyncio as redis

    _configure_django()
    layer = make_layer(stack, redis_url, prefix, CRASH_JOBS + 10)
    client = redis.Redis.from_url(redis_url)

    async def on_job(message: dict[str, Any]) -> None:
        await client.rpush(f"{prefix}handled", message["n"])

    print("ready", flush=True)
    await make_worker(stack, layer, on_job).run()


def crash_run(stack: str, redis_url: str, prefix: str) -> dict[str, Any]:
    """Send the jobs, kill the first worker after about a fifth of them, let a second finish: lost and duplicates."""
    import redis

    client = redis.Redis.from_url(redis_url)

    async def send_all() -> None:
        _configure_django()
        layer = make_layer(stack, redis_url, prefix, CRASH_JOBS + 10)
        for number in range(CRASH_JOBS):
            await layer.send(CHANNEL, {"type": "job.run", "n": number})
        await _close(layer, flush=False)

    asyncio.run(send_all())
    command = [sys.executable, "-m", "benchmarks.worker", "serve", stack, redis_url, prefix]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    first.stdout.readline()
    deadline = time.monotonic() + 60
    while client.llen(f"{prefix}handled") < CRASH_JOBS // 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    first.send_signal(signal.SIGKILL)
    first.wait()
    handled_by_first = client.llen(f"{prefix}handled")
    second = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = client.llen(f"{prefix}handled")
            if count != last:
                last, still_since = count, time.monotonic()
            elif time.monotonic() - still_since > 3:  # nothing new for 3 s (past the visibility timeout): done
                break
            time.sleep(0.05)
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait()
    numbers = [int(value) for value in client.lrange(f"{prefix}handled", 0, -1)]
    return {
        "handled_by_first": handled_by_first,
        "lost": CRASH_JOBS - len(set(numbers)),
        "duplicates": len(numbers) - len(set(numbers)),
    }


async def _close(layer: Any, flush: bool = True) -> None:
    if flush and hasattr(layer, "flush"):
        await layer.flush()
    for name in ("close", "close_pools"):
        method = getattr(layer, name, None)
        if method is not None:
            await method()
            return


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    from benchmarks.common import Bench, RedisServer, Row, alternate, run_json, stopping

    bench = Bench("worker", "7. Workers on the Redis layer: throughput, durable and not, and what a crash loses")
    redis_server = RedisServer()
    jobs = max(200, int(JOBS * scale))
    rates: dict[str, list[float | None]] = {}
    crashes: dict[str, list[dict[str, Any]]] = {}
    with stopping(redis_server):

        def one(round_index: int, stack: str) -> None:
            prefix = f"bench.worker.{stack}.{round_index}."
            answer = run_json(["benchmarks.worker", "throughput", stack, redis_server.url, prefix, str(jobs)], 300)
            rates.setdefault(stack, []).append(answer["jobs_per_s"])

        alternate(rounds, ["durable", "default", "channels"], one)
        for stack in ("default", "durable"):
            for round_index in range(max(1, rounds)):
                prefix = f"bench.crash.{stack}.{round_index}."
                answer = run_json(["benchmarks.worker", "crash", stack, redis_server.url, prefix], 300)
                crashes.setdefault(stack, []).append(answer)
    bench.add(
        Row(
            f"{jobs:,} waiting jobs, one worker",
            "jobs/s",
            "higher",
            {"durable": rates.get("durable", []), "default": rates.get("default", []), "channels": rates["channels"]},
            tether="durable",
            peer="default",
        )
    )
    for metric in ("lost", "duplicates"):
        bench.add(
            Row(
                f"{CRASH_JOBS:,} jobs, worker SIGKILLed after ~{CRASH_JOBS // 5:,}",
                f"jobs {metric}",
                "lower",
                {stack: [float(run[metric]) for run in runs] for stack, runs in crashes.items()},
                tether="durable",
            )
        )
    return bench.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rate = sub.add_parser("throughput", help="one worker draining waiting jobs; print one JSON line")
    rate.add_argument("stack", choices=["default", "durable", "channels"])
    rate.add_argument("redis_url")
    rate.add_argument("prefix")
    rate.add_argument("jobs", type=int)
    crash = sub.add_parser("crash", help="kill a worker mid-stream, let another finish; print one JSON line")
    crash.add_argument("stack", choices=["default", "durable"])
    crash.add_argument("redis_url")
    crash.add_argument("prefix")
    serve = sub.add_parser("serve", help="(used by crash) serve jobs until killed")
    serve.add_argument("stack", choices=["default", "durable"])
    serve.add_argument("redis_url")
    serve.add_argument("prefix")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.command == "throughput":
        print(json.dumps(asyncio.run(throughput(args.stack, args.redis_url, args.prefix, args.jobs))))
    elif args.command == "crash":
        print(json.dumps(crash_run(args.stack, args.redis_url, args.prefix)))
    else:
        asyncio.run(crash_worker(args.stack, args.redis_url, args.prefix))


if __name__ == "__main__":
    main()
