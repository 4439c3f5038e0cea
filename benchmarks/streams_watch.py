"""What the streams watch costs: Redis commands, Redis time and process CPU per check, by number of subscriptions.

Usage::

    .venv/bin/python -m benchmarks.streams_watch [--streams 100] [--subscribers 100 1000 10000]

It starts a private ``redis-server`` (so that ``INFO commandstats`` counts only this run), subscribes channels of one
``RedisChannelLayer`` to ``--streams`` streams (spread evenly), for each number of ``--subscribers``, and prints per
``watch.check()`` (the median of 5): the script calls (one ``EVALSHA`` per ``BATCH`` streams, whatever the
subscribers), the Redis time of those calls and the commands inside them (``usec`` of ``INFO commandstats``), and
the CPU time and wall time of the check in this process.

Nothing here asserts: it prints (tests/streams/test_watch.py asserts the call count).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from benchmarks.common import RedisServer, commands_between
from tether.layers.redis import RedisChannelLayer
from tether.streams.redis import RedisStreams
from tether.streams.settings import StreamPolicy


def redis_usec(server: RedisServer) -> int:
    stats = server.client.info("commandstats")
    return sum(int(value["usec"]) for name, value in stats.items() if name != "cmdstat_info")


async def measure(server: RedisServer, stream_count: int, subscribers: int) -> str:
    layer = RedisChannelLayer(hosts=[server.url], prefix=f"bench-watch-{subscribers}")
    streams = RedisStreams(layer, StreamPolicy(), watch_interval=3600)  # checked by hand only
    try:
        channels = [await layer.new_channel() for _ in range(subscribers)]
        await asyncio.gather(
            *(streams.subscribe(f"room.{n % stream_count}", channel) for n, channel in enumerate(channels))
        )
        await streams.watch.check()  # the script loaded
        return await _checks(server, streams, min(stream_count, subscribers), subscribers)
    finally:
        await streams.close()
        await layer.flush()
        await layer.close()


async def _checks(server: RedisServer, streams: RedisStreams, watched: int, subscribers: int) -> str:
    commands, usecs, cpus, walls = [], [], [], []
    for _ in range(5):
        before, usec = server.commandstats(), redis_usec(server)
        cpu, wall = time.process_time(), time.perf_counter()
        await streams.watch.check()
        cpus.append((time.process_time() - cpu) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
        usecs.append(redis_usec(server) - usec)
        ran = commands_between(before, server.commandstats())
        commands.append(ran.get("evalsha", 0) + ran.get("eval", 0))
    return (
        f"{subscribers:>6} subscriptions on {watched:>5} streams: {statistics.median(commands):.0f} script call(s), "
        f"Redis {statistics.median(usecs) / 1000:.2f} ms, process CPU {statistics.median(cpus):.2f} ms, "
        f"wall {statistics.median(walls):.2f} ms per check"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000, 10_000])
    options = parser.parse_args()
    with RedisServer() as server:
        print(f"redis-server {server.version()}")
        for subscribers in options.subscribers:
            print(asyncio.run(measure(server, options.streams, subscribers)))


if __name__ == "__main__":
    main()
