"""2. ``group_send`` fan-out: one message to a group of 10, 100, 1,000 and 10,000 members.

Every member is a channel from ``new_channel()`` with a task receiving on it, as a consumer would. Measured from just
before ``group_send`` until the last member has the message: p50 and p99 over repeated sends, deliveries per second
(members / p50), and for the Redis layers the Redis commands each ``group_send`` costs (``INFO commandstats`` deltas
over the timed sends, receivers' commands included). With 2 processes, half the members live in a second process
that shares the Redis server; ``time.monotonic()`` is one clock for both on Linux.

Each (stack, layer, processes) runs in a fresh process (``python -m benchmarks.fanout worker ...``), growing the
group through the sizes; tether and Channels alternate over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

__all__ = ["run"]

SIZES = (10, 100, 1_000, 10_000)
# Timed sends per size and round. 1,000 members takes 20, like the small sizes: with 8, the p50 of one round swung by a
# quarter between rounds of the same code on these shared machines (single sends range from 2 to 3 ms).
REPEATS = {10: 20, 100: 20, 1_000: 20, 10_000: 2}
WAIT = 10.0  # seconds a group_send may take before it counts as lost at that size
SKIP_ABOVE = 1.0  # seconds: a size whose send would take longer than this (linear extrapolation) is not run
GROUP = "bench.fanout"


class Members:
    """Receiving members of ``GROUP`` in this process: each a channel and a task that receives on it."""

    def __init__(self, layer: Any, key: str = "seq") -> None:
        self.layer = layer
        self.key = key  # the message field that numbers the sends
        self.tasks: list[asyncio.Task[None]] = []
        self.counts: dict[int, int] = {}
        self.last: dict[int, float] = {}
        self.events: dict[int, asyncio.Event] = {}

    async def grow(self, size: int) -> None:
        async def join() -> None:
            channel = await self.layer.new_channel()
            await self.layer.group_add(GROUP, channel)
            self.tasks.append(asyncio.create_task(self._listen(channel)))

        while len(self.tasks) < size:
            batch = min(50, size - len(self.tasks))  # channels_redis's pool holds 100 connections
            await asyncio.gather(*(join() for _ in range(batch)))

    async def _listen(self, channel: str) -> None:
        monotonic = time.monotonic
        while True:
            message = await self.layer.receive(channel)
            now = monotonic()
            seq = message[self.key]
            count = self.counts[seq] = self.counts.get(seq, 0) + 1
            self.last[seq] = now
            if count >= len(self.tasks):
                event = self.events.get(seq)
                if event is not None:
                    event.set()

    async def wait(self, seq: int, timeout: float) -> dict[str, Any]:
        """When every member here has message ``seq`` (or ``timeout``): the time the last one got it."""
        event = self.events.setdefault(seq, asyncio.Event())
        if self.counts.get(seq, 0) >= len(self.tasks):
            event.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        count = self.counts.pop(seq, 0)
        self.events.pop(seq, None)
        last = self.last.pop(seq, None)
        return {"count": count, "expected": len(self.tasks), "last": last if count >= len(self.tasks) else None}

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class RemoteMembers:
    """The members in the second process, driven over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, stack: str, backend: str, redis_url: str, prefix: str) -> RemoteMembers:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.fanout", "members", stack, backend, redis_url, prefix,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def call(self, limit: float, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), limit)
        if not line:
            raise RuntimeError("the member process exited")
        return json.loads(line)

    async def grow(self, size: int) -> None:
        await self.call(300, op="grow", size=size)

    async def wait(self, seq: int, timeout: float) -> dict[str, Any]:
        return await self.call(timeout + 5, op="wait", seq=seq, timeout=timeout)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.call(10, op="exit")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 10)
        if self.proc.returncode is None:
            self.proc.kill()


async def _send_and_wait(layer: Any, hosts: list[Any], seq: int) -> float | None:
    started = time.monotonic()
    waits = [asyncio.create_task(host.wait(seq, WAIT)) for host in hosts]
    await layer.group_send(GROUP, {"type": "bench.fanout", "seq": seq, "text": "x" * 60})
    answers = await asyncio.gather(*waits)
    if any(answer["last"] is None for answer in answers):
        return None
    return max(answer["last"] for answer in answers) - started


async def worker(stack: str, backend: str, redis_url: str, prefix: str, processes: int, scale: float) -> dict[str, Any]:
    from benchmarks.common import commands_between, percentile
    from benchmarks.layer import close_layer, make_layer

    layer = make_layer(stack, backend, redis_url, prefix)
    local = Members(layer)
    hosts: list[Any] = [local]
    if processes == 2:
        hosts.append(await RemoteMembers.start(stack, backend, redis_url, prefix))
    redis_client = None
    if backend != "inmemory":
        import redis.asyncio as redis

        redis_client = redis.Redis.from_url(redis_url)

    async def commandstats() -> dict[str, int]:
        if redis_client is None:
            return {}
        stats = await redis_client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info"}

    results = []
    seq = 0
    lost = False
    previous_p50: float | None = None
    previous_size = 1
    try:
        for size in SIZES:
            if lost:
                results.append({"members": size, "skipped": "a smaller group already took longer than the limit"})
                continue
            if previous_p50 is not None and previous_p50 * size / previous_size > SKIP_ABOVE:
                lost = True
                results.append(
                    {
                        "members": size,
                        "skipped": f"{previous_size:,} members took {previous_p50 * 1000:.0f} ms; {size:,} would take "
                        f"over {SKIP_ABOVE:.0f} s a send even if it grew only linearly",
                    }
                )
                continue
            await asyncio.gather(*(host.grow(size // len(hosts)) for host in hosts))
            # Warm-up until one message reaches everybody (pub/sub subscriptions settle).
            for _attempt in range(3 if backend == "pubsub" else 1):
                seq += 1
                if await _send_and_wait(layer, hosts, seq) is not None:
                    break
            else:
                lost = True
                results.append({"members": size, "skipped": f"a group_send did not reach everybody in {WAIT}s"})
                continue
            latencies: list[float] = []
            before = await commandstats()
            repeats = max(2, round(REPEATS[size] * scale))
            budget = time.monotonic() + 20 * scale
            for _ in range(repeats):
                seq += 1
                latency = await _send_and_wait(layer, hosts, seq)
                if latency is None:
                    lost = True
                    break
                latencies.append(latency)
                if time.monotonic() > budget:
                    break
                await asyncio.sleep(0.005)
            commands = commands_between(before, await commandstats())
            p50 = percentile(latencies, 0.5)
            previous_p50, previous_size = p50, size
            results.append(
                {
                    "members": size,
                    "sends": len(latencies),
                    "p50_ms": p50 * 1000 if p50 is not None else None,
                    "p99_ms": (percentile(latencies, 0.99) or 0) * 1000 if latencies else None,
                    "deliveries_per_s": size / p50 if p50 else None,
                    "commands_per_send": sum(commands.values()) / len(latencies)
                    if latencies and redis_client
                    else None,
                    "commands": {name: count / max(1, len(latencies)) for name, count in commands.items()},
                    **({"skipped": f"a group_send did not reach everybody in {WAIT}s"} if lost else {}),
                }
            )
    finally:
        for host in hosts:
            await host.stop()
        await close_layer(layer)
        if redis_client is not None:
            await redis_client.aclose()
    return {"stack": stack, "backend": backend, "processes": processes, "sizes": results}


async def member_process(stack: str, backend: str, redis_url: str, prefix: str) -> None:
    from benchmarks.layer import close_layer, make_layer

    layer = make_layer(stack, backend, redis_url, prefix)
    members = Members(layer)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def answer(coro: Any) -> None:
        sys.stdout.write(json.dumps(await coro) + "\n")
        sys.stdout.flush()

    pending: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        command = json.loads(line)
        if command["op"] == "exit":
            break
        if command["op"] == "grow":

            async def grow(size: int = command["size"]) -> dict[str, Any]:
                await members.grow(size)
                return {"members": len(members.tasks)}

            await answer(grow())
        elif command["op"] == "wait":
            task = asyncio.create_task(answer(members.wait(command["seq"], command["timeout"])))
            pending.add(task)
            task.add_done_callback(pending.discard)
    await members.stop()
    await close_layer(layer)
    print("{}", flush=True)


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    from benchmarks.common import Bench, RedisServer, Row, alternate, run_json, stopping, unavailable_tether_layers

    bench = Bench("fanout", "2. group_send fan-out")
    unavailable = unavailable_tether_layers(bench, ("redis", "pubsub"))
    bench.note("p99 is the nearest-rank 99th percentile of the timed sends at that size (3-20 sends: near the max).")
    redis_server = RedisServer()
    data: dict[tuple[str, str, int, int], list[dict[str, Any] | None]] = {}
    names = {"inmemory": "in-memory", "redis": "Redis", "pubsub": "Redis pub/sub"}
    with stopping(redis_server):
        for processes, backends in ((1, ("inmemory", "redis", "pubsub")), (2, ("redis", "pubsub"))):
            for backend in backends:

                def one(round_index: int, stack: str, backend: str = backend, processes: int = processes) -> None:
                    if stack == "tether" and unavailable.get(backend):
                        for size in SIZES:
                            data.setdefault((stack, backend, processes, size), []).append(None)
                        return
                    prefix = f"bench.fanout.{stack}.{backend}.{processes}.{round_index}."
                    try:
                        answer = run_json(
                            ["benchmarks.fanout", "worker", stack, backend, redis_server.url, prefix, str(processes),
                             str(scale)],
                            timeout=400,
                        )  # fmt: skip
                    except Exception as exc:
                        bench.note(f"{stack} {backend} x{processes} failed: {exc}")
                        answer = {"sizes": []}
                    by_size = {entry["members"]: entry for entry in answer["sizes"]}
                    for size in SIZES:
                        entry = by_size.get(size)
                        if entry and entry.get("skipped"):
                            bench.note(
                                f"{stack}, {names[backend]}, {processes} process(es), {size}: {entry['skipped']}"
                            )
                        data.setdefault((stack, backend, processes, size), []).append(entry)

                alternate(rounds, ["tether", "channels"], one)

        def pick(stack: str, backend: str, processes: int, size: int, key: str) -> list[float | None]:
            return [entry.get(key) if entry else None for entry in data.get((stack, backend, processes, size), [])]

        for processes, backends in ((1, ("inmemory", "redis", "pubsub")), (2, ("redis", "pubsub"))):
            for backend in backends:
                for size in SIZES:
                    where = "1 process" if processes == 1 else "2 processes"
                    case = f"{names[backend]}, {size:,} members, {where}"
                    for key, metric, better in (
                        ("p50_ms", "p50 ms", "lower"),
                        ("p99_ms", "p99 ms", "lower"),
                        ("deliveries_per_s", "deliveries/s", "higher"),
                    ) + ((("commands_per_send", "Redis cmds/group_send", "lower"),) if backend != "inmemory" else ()):
                        series = {stack: pick(stack, backend, processes, size, key) for stack in ("tether", "channels")}
                        extra = {}
                        if key == "commands_per_send":
                            extra = {
                                stack: [
                                    entry.get("commands") if entry else None
                                    for entry in data[stack, backend, processes, size]
                                ]
                                for stack in ("tether", "channels")
                            }
                        bench.add(Row(case, metric, better, series, tether="tether", peer="channels", extra=extra))
    return bench.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker")
    work.add_argument("stack", choices=["tether", "channels"])
    work.add_argument("backend", choices=["inmemory", "redis", "pubsub"])
    work.add_argument("redis_url")
    work.add_argument("prefix")
    work.add_argument("processes", type=int, choices=[1, 2])
    work.add_argument("scale", type=float)
    members = sub.add_parser("members")
    members.add_argument("stack", choices=["tether", "channels"])
    members.add_argument("backend", choices=["inmemory", "redis", "pubsub"])
    members.add_argument("redis_url")
    members.add_argument("prefix")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.command == "members":
        runner(member_process(args.stack, args.backend, args.redis_url, args.prefix))
        return
    result = runner(worker(args.stack, args.backend, args.redis_url, args.prefix, args.processes, args.scale))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
