"""8. Redis Cluster: the layer throughput and ``group_send`` rows on a 3-master cluster, next to a single Redis.

Both started by this benchmark on 127.0.0.1 (``RedisServer``, ``RedisClusterServers``) and used in the same run, the
single server and the cluster alternating over the rounds, each in a fresh process
(``python -m benchmarks.cluster worker ...``). The loops are those of benchmarks 1 and 2 (``layer.measure``,
``fanout.Members``): send then receive with 1 and 50 senders on a named and a ``new_channel()`` channel, and
``group_send`` to 100 and 1,000 members in one process until all have it. On one machine the three masters share its
cores with the benchmark, so the cluster cannot be faster here; what this shows is what routing and per-master
batching cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

__all__ = ["run"]

BACKENDS = ("redis", "pubsub")
CASES = [("named", 1), ("named", 50), ("local", 1), ("local", 50)]
SIZES = (100, 1_000)
SENDS = 20  # timed group_sends per size
TOPOLOGIES = ("single", "cluster")


def make_layer(backend: str, hosts: list[Any], prefix: str) -> Any:
    from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

    cls = RedisChannelLayer if backend == "redis" else RedisPubSubChannelLayer
    return cls(hosts=hosts, prefix=prefix)


async def fanout(backend: str, hosts: list[Any], prefix: str, scale: float) -> dict[int, float | None]:
    """p50 seconds of ``group_send`` until every member (one process) has it, per group size."""
    from benchmarks.common import percentile
    from benchmarks.fanout import GROUP, WAIT, Members
    from benchmarks.layer import close_layer

    layer = make_layer(backend, hosts, prefix)
    members = Members(layer)
    p50s: dict[int, float | None] = {}
    seq = 0
    try:
        for size in SIZES:
            await members.grow(size)
            latencies: list[float] = []
            for attempt in range(3 + max(2, round(SENDS * scale))):
                seq += 1
                started = time.monotonic()
                waiting = asyncio.ensure_future(members.wait(seq, WAIT))
                await layer.group_send(GROUP, {"type": "bench.fanout", "seq": seq, "text": "x" * 60})
                answer = await waiting
                if answer["last"] is None:
                    continue  # a pub/sub warm-up message that came before every subscription settled
                if attempt >= 3:  # the first three warm the connections up
                    latencies.append(answer["last"] - started)
                await asyncio.sleep(0.005)
            p50s[size] = percentile(latencies, 0.5)
    finally:
        await members.stop()
        await close_layer(layer)
    return p50s


async def worker(hosts: list[Any], prefix: str, duration: float, scale: float) -> dict[str, Any]:
    from benchmarks.layer import close_layer, measure

    rates: list[dict[str, Any]] = []
    p50s: list[dict[str, Any]] = []
    for backend in BACKENDS:
        for index, (kind, senders) in enumerate(CASES):
            layer = make_layer(backend, hosts, f"{prefix}{backend}.{index}:")
            channel = await layer.new_channel() if kind == "local" else "bench.named"
            try:
                result = await asyncio.wait_for(measure(layer, channel, senders, duration), duration + 30)
            except Exception as exc:
                result = {"msgs_per_s": None, "error": f"{type(exc).__name__}: {exc}"}
            finally:
                await close_layer(layer)
            rates.append({"backend": backend, "channel": kind, "senders": senders, **result})
        for size, p50 in (await fanout(backend, hosts, f"{prefix}{backend}.fanout:", scale)).items():
            p50s.append({"backend": backend, "members": size, "p50_ms": None if p50 is None else p50 * 1000})
    return {"rates": rates, "fanout": p50s}


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    from benchmarks.common import Bench, RedisClusterServers, RedisServer, Row, alternate, run_json, stopping

    bench = Bench("cluster", "8. Redis Cluster (3 masters) next to a single Redis")
    duration = 0.4 * scale
    single = RedisServer()
    cluster = RedisClusterServers()
    hosts = {"single": [single.url], "cluster": [cluster.host]}
    values: dict[tuple[Any, ...], list[float | None]] = {}
    with stopping(single, cluster):

        def one(round_index: int, topology: str) -> None:
            prefix = f"bench.cluster.{topology}.{round_index}."
            answer = run_json(
                ["benchmarks.cluster", "worker", json.dumps(hosts[topology]), prefix, str(duration), str(scale)],
                timeout=300,
            )
            for case in answer["rates"]:
                if case.get("error"):
                    bench.note(f"{topology} {case['backend']} {case['channel']} x{case['senders']}: {case['error']}")
                key = ("rate", topology, case["backend"], case["channel"], case["senders"])
                values.setdefault(key, []).append(case["msgs_per_s"])
            for case in answer["fanout"]:
                values.setdefault(("fanout", topology, case["backend"], case["members"]), []).append(case["p50_ms"])

        alternate(rounds, TOPOLOGIES, one)
    names = {"redis": "Redis", "pubsub": "Redis pub/sub"}
    for backend in BACKENDS:
        for kind, senders in CASES:
            series = {topology: values.get(("rate", topology, backend, kind, senders), []) for topology in TOPOLOGIES}
            sender_text = "1 sender" if senders == 1 else f"{senders} senders"
            case = f"{names[backend]}, {sender_text}, {kind} channel"
            bench.add(Row(case, "msgs/s", "higher", series, tether="cluster", peer="single"))
    for backend in BACKENDS:
        for size in SIZES:
            series = {topology: values.get(("fanout", topology, backend, size), []) for topology in TOPOLOGIES}
            case = f"{names[backend]} group_send, {size:,} members, 1 process"
            bench.add(Row(case, "p50 ms", "lower", series, tether="cluster", peer="single"))
    bench.note("one machine: the three masters share its cores with the benchmark (medians of the rounds)")
    return bench.finish()


def main() -> None:
    """``python -m benchmarks.cluster worker HOSTS PREFIX DURATION SCALE``: one topology's figures, one JSON line."""
    if len(sys.argv) != 6 or sys.argv[1] != "worker":
        raise SystemExit(main.__doc__)
    hosts, prefix, duration, scale = json.loads(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(worker(hosts, prefix, duration, scale))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
