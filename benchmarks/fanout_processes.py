"""9. ``group_send`` across processes: one message to 100, 1,000 and 10,000 members spread over 4 worker processes.

The shape of a deployment: a sender (a view, a worker) in a process of its own, the group's members split evenly over
4 processes that each hold a quarter of them as ``new_channel()`` channels with a receiving task
(``benchmarks.fanout.RemoteMembers``), all on the Redis core layer of a redis-server this benchmark starts. Measured
per size, over a bounded number of timed sends: the time from just before ``group_send`` until the last member in
any process has the message (p50, p99; ``time.monotonic()`` is one clock for every process on Linux), the Redis
commands each send costs (``INFO commandstats`` deltas over the timed sends, the receivers' commands included: they
should stay flat in members and grow only with processes), and CPU per send: the sender and the 4 member processes
together (psutil), and redis-server's own (``INFO cpu``). CPU time holds up better than wall time on a shared
machine.

Each (stack, round) runs in a fresh sender process (``python -m benchmarks.fanout_processes sender ...``) that starts
its 4 member processes and grows the group through the sizes; tether and channels_redis alternate over the rounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

__all__ = ["run"]

PROCESSES = 4
SIZES = (100, 1_000, 10_000)
SENDS = 30  # timed group_sends per size and round, each bounded by WAIT; all of a size's sends by BUDGET
BUDGET = 20.0  # seconds of timed sends per size and round (times --scale)


async def cpu_seconds(hosts: list[Any], redis_client: Any) -> tuple[float, float]:
    """CPU seconds so far of this process plus the member processes, and of redis-server."""
    import psutil

    processes = time.process_time()
    for host in hosts:
        times = psutil.Process(host.proc.pid).cpu_times()
        processes += times.user + times.system
    info = await redis_client.info("cpu")
    return processes, float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def sender(stack: str, redis_url: str, prefix: str, scale: float) -> dict[str, Any]:
    """Grow the group through ``SIZES`` over ``PROCESSES`` member processes and time ``group_send`` at each size."""
    import redis.asyncio as redis

    from benchmarks.common import commands_between, percentile
    from benchmarks.fanout import RemoteMembers, commandstats, send_and_wait
    from benchmarks.layer import close_layer, make_layer

    layer = make_layer(stack, "redis", redis_url, prefix)
    redis_client = redis.Redis.from_url(redis_url)
    hosts = [await RemoteMembers.start(stack, "redis", redis_url, prefix) for _ in range(PROCESSES)]
    results: list[dict[str, Any]] = []
    seq = 0
    try:
        for size in SIZES:
            await asyncio.gather(*(host.grow(size // PROCESSES) for host in hosts))
            seq += 1
            if await send_and_wait(layer, hosts, seq) is None:  # warm-up, and the check that everybody is there
                results.append({"members": size, "skipped": "the warm-up group_send did not reach everybody"})
                break
            latencies: list[float] = []
            commands_before = await commandstats(redis_client)
            cpu_before = await cpu_seconds(hosts, redis_client)
            budget = time.monotonic() + BUDGET * scale
            for _ in range(max(3, round(SENDS * scale))):
                seq += 1
                latency = await send_and_wait(layer, hosts, seq)
                if latency is None:
                    break
                latencies.append(latency)
                if time.monotonic() > budget:
                    break
                await asyncio.sleep(0.005)
            cpu_after = await cpu_seconds(hosts, redis_client)
            commands = commands_between(commands_before, await commandstats(redis_client))
            sends = max(1, len(latencies))
            results.append(
                {
                    "members": size,
                    "sends": len(latencies),
                    "p50_ms": _ms(percentile(latencies, 0.5)),
                    "p99_ms": _ms(percentile(latencies, 0.99)),
                    "commands_per_send": sum(commands.values()) / sends,
                    "commands": {name: count / sends for name, count in commands.items()},
                    "cpu_ms_per_send": (cpu_after[0] - cpu_before[0]) * 1000 / sends,
                    "redis_cpu_ms_per_send": (cpu_after[1] - cpu_before[1]) * 1000 / sends,
                    **({"skipped": "a group_send did not reach everybody in time"} if len(latencies) < 3 else {}),
                }
            )
            if len(latencies) < 3:
                break
    finally:
        for host in hosts:
            await host.stop()
        await close_layer(layer)
        await redis_client.aclose()
    return {"stack": stack, "sizes": results}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


METRICS = (
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("commands_per_send", "Redis cmds/group_send"),
    ("cpu_ms_per_send", "CPU ms/group_send (sender + members)"),
    ("redis_cpu_ms_per_send", "redis-server CPU ms/group_send"),
)


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    from benchmarks.common import Bench, RedisServer, Row, alternate, run_json, stopping, unavailable_tether_layers

    bench = Bench("fanout_processes", f"9. group_send across {PROCESSES} processes (Redis layer)")
    unavailable = unavailable_tether_layers(bench, ("redis",))
    load_before = os.getloadavg()[0]
    redis_server = RedisServer()
    entries: dict[tuple[str, int], list[dict[str, Any] | None]] = {}
    with stopping(redis_server):

        def one(round_index: int, stack: str) -> None:
            answer: dict[str, Any] = {"sizes": []}
            if not (stack == "tether" and unavailable.get("redis")):
                try:
                    answer = run_json(
                        ["benchmarks.fanout_processes", "sender", stack, redis_server.url,
                         f"bench.spread.{stack}.{round_index}.", str(scale)],
                        timeout=600,
                    )  # fmt: skip
                except Exception as exc:
                    bench.note(f"{stack} round {round_index + 1} failed: {exc}")
            by_size = {entry["members"]: entry for entry in answer["sizes"]}
            for size in SIZES:
                entry = by_size.get(size)
                if entry and entry.get("skipped"):
                    bench.note(f"{stack}, {size:,} members: {entry['skipped']}")
                    entry = None
                entries.setdefault((stack, size), []).append(entry)

        alternate(rounds, ["tether", "channels"], one)

    for size in SIZES:
        case = f"{size:,} members, {PROCESSES} processes"
        for key, metric in METRICS:
            series = {
                stack: [entry[key] if entry else None for entry in entries.get((stack, size), [])]
                for stack in ("tether", "channels")
            }
            extra = {}
            if key == "commands_per_send":
                extra = {
                    stack: [entry["commands"] if entry else None for entry in entries.get((stack, size), [])]
                    for stack in ("tether", "channels")
                }
            bench.add(Row(case, metric, "lower", series, tether="tether", peer="channels", extra=extra))
    bench.note(
        f"the sender is a process of its own; each of the {PROCESSES} member processes holds a quarter of the members; "
        f"up to {SENDS} timed sends per size and round (p99 is the nearest-rank 99th percentile: near the max)"
    )
    bench.note(
        f"load average (1 min) on this {os.cpu_count()}-core machine: {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end: the wall times (p50, p99) include waiting for a core, CPU times do not"
    )
    bench.note("CPU ms/group_send sums the sender and the member processes; redis-server's comes from its INFO cpu")
    return bench.finish()


def main() -> None:
    """``python -m benchmarks.fanout_processes sender STACK REDIS_URL PREFIX SCALE``: one JSON line."""
    from benchmarks.common import run_async

    if len(sys.argv) != 6 or sys.argv[1] != "sender" or sys.argv[2] not in ("tether", "channels"):
        raise SystemExit(main.__doc__)
    stack, redis_url, prefix, scale = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    print(json.dumps(run_async(sender(stack, redis_url, prefix, scale))), flush=True)


if __name__ == "__main__":
    main()
