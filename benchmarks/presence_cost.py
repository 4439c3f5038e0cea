"""What presence costs Redis: 1,000 members joined and left in each of 2 processes, and the commands per heartbeat.

Usage::

    .venv/bin/python benchmarks/presence_cost.py [--members 1000]

It starts a private ``redis-server`` on a free port (so that ``INFO commandstats`` counts only this run), makes two
``RedisChannelLayer`` instances standing for two processes, and prints:

* the time to join ``--members`` channels in each process (concurrently) and to leave them, per member;
* the time of ``members()`` and ``count()`` of the group of both processes' members;
* the Redis commands of 10 heartbeats of each process with 1 member each, then with ``--members`` each: the same
  commands both times (one ``EVALSHA`` per heartbeat, and the same four commands inside it), whatever the members.

Nothing here asserts: it prints (tests/presence/test_redis_presence.py asserts the heartbeat's command count).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time

from tether.layers.redis import RedisChannelLayer
from tether.presence import get_presence


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )
    return process, f"redis://127.0.0.1:{port}/0"


async def command_counts(url: str, beats: list) -> dict[str, int]:
    """The commands Redis ran for ``beats`` (coroutine functions), counted by INFO commandstats."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    await client.config_resetstat()
    for beat in beats:
        await beat()
    stats = await client.info("commandstats")
    await client.aclose()
    return {name[8:]: stat["calls"] for name, stat in stats.items() if name not in ("cmdstat_ping",)}


async def run(url: str, members: int) -> None:
    layers = [RedisChannelLayer(hosts=[url], prefix="bench") for _ in range(2)]
    trackers = [get_presence(layer, ttl=120, heartbeat=60) for layer in layers]  # beats made by hand only
    channels = [[f"specific.{layer.client_id}!{n:08x}" for n in range(members)] for layer in layers]
    try:
        for tracker, names in zip(trackers, channels, strict=True):
            await tracker.join("bench.room", names[0], user=0, listen=False)
        beats = [tracker._beat_once for tracker in trackers for _ in range(10)]
        await command_counts(url, beats[:2])  # scripts loaded
        few = await command_counts(url, beats)

        started = time.perf_counter()
        await asyncio.gather(
            *(
                tracker.join("bench.room", channel, user=n % 300, meta={"n": n}, listen=False)
                for tracker, names in zip(trackers, channels, strict=True)
                for n, channel in enumerate(names[1:], 1)
            )
        )
        joined = time.perf_counter() - started
        many = await command_counts(url, beats)

        started = time.perf_counter()
        listed = await trackers[0].members("bench.room")
        listing = time.perf_counter() - started
        started = time.perf_counter()
        count = await trackers[0].count("bench.room")
        counting = time.perf_counter() - started

        started = time.perf_counter()
        await asyncio.gather(
            *(tracker.leave("bench.room", c) for tracker, names in zip(trackers, channels, strict=True) for c in names)
        )
        left = time.perf_counter() - started
    finally:
        for tracker, layer in zip(trackers, layers, strict=True):
            await tracker.close()
            await layer.flush()
            await layer.close()

    total = 2 * members
    print(f"join: {total} members over 2 processes in {joined * 1000:.0f} ms ({joined / total * 1e6:.0f} µs each)")
    print(f"leave: {total} members in {left * 1000:.0f} ms ({left / total * 1e6:.0f} µs each)")
    print(f"members(): {len(listed)} users in {listing * 1000:.1f} ms; count(): {count} in {counting * 1000:.1f} ms")
    print(f"20 heartbeats (2 processes x 10), 1 member each:        {few}")
    print(f"20 heartbeats (2 processes x 10), {members} members each: {many}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000, help="members per process")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server, url = start_redis(directory)
        try:
            time.sleep(0.3)
            asyncio.run(run(url, options.members))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
