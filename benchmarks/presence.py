"""What presence costs Redis: 1,000 members joined and left in each of 2 processes, and the commands per heartbeat.

``make bench BENCH=presence`` runs it with the other benchmarks (issue 13's third speed target: no Redis command
count that grows per member per heartbeat); on its own::

    .venv-bench/bin/python -m benchmarks.presence [--members 1000]

It starts a private ``redis-server`` on a free port (so that ``INFO commandstats`` counts only this run), makes two
``RedisChannelLayer`` instances standing for two processes, and prints:

* the time to join ``--members`` channels in each process (concurrently) and to leave them, per member;
* the time of ``members()`` and ``count()`` of the group of both processes' members;
* the Redis commands of 10 heartbeats of each process with 1 member each, then with ``--members`` each: the same
  commands both times (one ``EVALSHA`` per heartbeat, and the same four commands inside it), whatever the members.

The script prints; ``make bench`` keeps the figures as rows and checks the target
(tests/presence/test_redis_presence.py asserts the heartbeat's command count too).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

from tether.layers.redis import RedisChannelLayer
from tether.presence import get_presence

MEMBERS = 1_000


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
    # Not the counting's own commands (CONFIG RESETSTAT) nor the client's PING.
    return {
        name[8:]: stat["calls"]
        for name, stat in stats.items()
        if name not in ("cmdstat_ping", "cmdstat_config|resetstat", "cmdstat_config")
    }


async def measure(url: str, members: int) -> dict[str, Any]:
    """Join and leave ``members`` channels in each of two layers (two processes' worth) and count the heartbeats'
    commands with 1 member and with ``members`` members per process."""
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
        for tracker in trackers:  # the join events go out on a timer: sent now, they are not counted as a beat's
            await tracker.flush_events()
            await asyncio.gather(*list(tracker._sending))
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
    return {
        "join_us": joined / total * 1e6,
        "leave_us": left / total * 1e6,
        "members_ms": listing * 1000,
        "users": len(listed),
        "count_ms": counting * 1000,
        "count": count,
        "few": few,
        "many": many,
    }


def measure_on_private_redis(members: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        server, url = start_redis(directory)
        try:
            time.sleep(0.3)
            return asyncio.run(measure(url, members))
        finally:
            server.terminate()
            server.wait(timeout=10)


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    """``make bench``'s entry: a fresh private Redis per round, the rows and the per-heartbeat command counts."""
    from benchmarks.common import Bench, Row

    bench = Bench("presence", "13. Presence: joins, leaves and the heartbeat's Redis cost")
    bench.note(
        f"two RedisChannelLayer instances stand for two processes, {MEMBERS:,} members each, on a private redis-server "
        "per round; a heartbeat is made by hand (10 per process) with 1 member per process, then with all of them, "
        "and INFO commandstats counts the commands (scripts loaded before counting)."
    )
    figures = [measure_on_private_redis(MEMBERS) for _ in range(rounds)]
    case = f"2 processes, {MEMBERS:,} members each"
    for key, metric in (("join_us", "join µs/member"), ("leave_us", "leave µs/member")):
        bench.add(Row(case, metric, "lower", {"presence": [figure[key] for figure in figures]}, tether="presence"))
    for key, metric in (("members_ms", "members() ms"), ("count_ms", "count() ms")):
        bench.add(Row(case, metric, "lower", {"presence": [figure[key] for figure in figures]}, tether="presence"))
    beats = 20  # 2 processes x 10 heartbeats
    series = {
        "1 member each": [sum(figure["few"].values()) / beats for figure in figures],
        f"{MEMBERS:,} members each": [sum(figure["many"].values()) / beats for figure in figures],
    }
    bench.add(Row(case, "Redis cmds/heartbeat", "lower", series, tether=f"{MEMBERS:,} members each"))
    last = figures[-1]
    bench.note(f"commands of 20 heartbeats, last round: 1 member {last['few']}; {MEMBERS:,} {last['many']}")
    return bench.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=MEMBERS, help="members per process")
    options = parser.parse_args()
    figures = measure_on_private_redis(options.members)
    total = 2 * options.members
    print(f"join: {total} members over 2 processes, {figures['join_us']:.0f} µs each")
    print(f"leave: {total} members, {figures['leave_us']:.0f} µs each")
    print(f"members(): {figures['users']} users in {figures['members_ms']:.1f} ms; count(): {figures['count']} in "
          f"{figures['count_ms']:.1f} ms")  # fmt: skip
    print(f"20 heartbeats (2 processes x 10), 1 member each: {figures['few']}")
    print(f"20 heartbeats (2 processes x 10), {options.members} members each: {figures['many']}")


if __name__ == "__main__":
    main()
