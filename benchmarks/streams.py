"""9. Streams: ``publish`` to a stream against a plain ``group_send`` to the same members, and recovery.

* **Publish vs group_send**: 1,000 members in one process (channels from ``new_channel()``, each with a task receiving
  on it, as in benchmark 2) subscribed to one stream. Timed from just before the call until the last member has the
  message: ``streams.publish(stream, data)`` (which also keeps the message and gives it its offset) against
  ``layer.group_send(stream, message)`` of a message of the same shape and size, which keeps nothing. p50 over the
  sends, and CPU time per send (the process's, senders and receivers alike: steadier than wall time on a shared
  machine). The two alternate over the rounds, each in a fresh process. In-memory, Redis and Redis pub/sub layers.
* **Recovery of 1,000 missed messages**: 1,000 messages published to a stream nobody reads, then
  ``recover(stream, epoch, 0)`` timed from the call until it returns the 1,000 entries (complete): p50 over 20 calls.

``python -m benchmarks.streams worker <variant> <backend> <redis url> <prefix> <scale>`` is one (variant, layer) run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

__all__ = ["run"]

MEMBERS = 1_000
SENDS = 20  # timed sends per round
MISSED = 1_000
RECOVERIES = 20
STREAM = "bench.stream"
BACKENDS = ("inmemory", "redis", "pubsub")
NAMES = {"inmemory": "in-memory", "redis": "Redis", "pubsub": "Redis pub/sub"}
VARIANTS = ("publish", "group_send")
DATA = {"text": "x" * 60}


async def worker(variant: str, backend: str, redis_url: str, prefix: str, scale: float) -> dict[str, Any]:
    from benchmarks.common import percentile
    from benchmarks.fanout import WAIT, Members
    from benchmarks.layer import close_layer, make_layer
    from tether.streams import get_streams

    layer = make_layer("tether", backend, redis_url, prefix)
    streams = get_streams(layer)
    members = Members(layer, key="offset")
    epoch = (await streams.position(STREAM)).epoch
    try:
        while len(members.tasks) < MEMBERS:
            channels = [await layer.new_channel() for _ in range(min(50, MEMBERS - len(members.tasks)))]
            await asyncio.gather(*(streams.subscribe(STREAM, channel) for channel in channels))
            members.tasks += [asyncio.create_task(members._listen(channel)) for channel in channels]

        async def send(offset: int) -> None:
            if variant == "publish":
                await streams.publish(STREAM, DATA)
            else:
                message = {"type": "stream.message", "stream": STREAM, "epoch": epoch, "offset": offset, "data": DATA}
                await layer.group_send(STREAM, message)

        latencies: list[float] = []
        cpu: list[float] = []
        warm = 3
        for offset in range(1, warm + max(2, round(SENDS * scale)) + 1):
            waiting = asyncio.ensure_future(members.wait(offset, WAIT))
            started, started_cpu = time.monotonic(), time.process_time()
            await send(offset)
            answer = await waiting
            spent_cpu = time.process_time() - started_cpu
            if answer["last"] is None:
                if offset > warm:
                    raise RuntimeError(f"send {offset} did not reach every member in {WAIT}s")
                continue  # a pub/sub warm-up message that came before every subscription settled
            if offset > warm:
                latencies.append(answer["last"] - started)
                cpu.append(spent_cpu)
            await asyncio.sleep(0.005)
        result: dict[str, Any] = {
            "p50_ms": (percentile(latencies, 0.5) or 0) * 1000,
            "cpu_ms": sum(cpu) / len(cpu) * 1000,
        }
        if variant == "publish":
            result["recover_p50_ms"] = await recovery(streams, scale)
    finally:
        await members.stop()
        await close_layer(layer)
    return result


async def recovery(streams: Any, scale: float) -> float:
    """p50 ms of recovering ``MISSED`` messages (each checked complete)."""
    from benchmarks.common import percentile

    stream = STREAM + ".missed"
    start = await streams.position(stream)
    for n in range(MISSED):
        await streams.publish(stream, {"n": n, **DATA})
    times: list[float] = []
    for _ in range(max(3, round(RECOVERIES * scale))):
        started = time.monotonic()
        recovered = await streams.recover(stream, start.epoch, start.offset)
        times.append(time.monotonic() - started)
        if recovered.reload is not None or len(recovered.entries) != MISSED:
            raise RuntimeError(f"recovery was not complete: {recovered.reload}, {len(recovered.entries)} entries")
    return (percentile(times, 0.5) or 0) * 1000


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    from benchmarks.common import Bench, RedisServer, Row, alternate, run_json, stopping

    bench = Bench("streams", "9. Streams: publish vs group_send, and recovery")
    bench.note(
        f"publish keeps the message and gives it an offset; group_send sends a message of the same shape and keeps "
        f"nothing. {MEMBERS:,} members in one process; CPU ms is the process's per send, until every member has it."
    )
    redis_server = RedisServer()
    data: dict[tuple[str, str], list[dict[str, Any] | None]] = {}
    with stopping(redis_server):
        for backend in BACKENDS:

            def one(round_index: int, variant: str, backend: str = backend) -> None:
                prefix = f"bench.streams.{variant}.{backend}.{round_index}"
                try:
                    answer = run_json(
                        ["benchmarks.streams", "worker", variant, backend, redis_server.url, prefix, str(scale)], 400
                    )
                except Exception as exc:
                    bench.note(f"{variant} on {NAMES[backend]} failed: {exc}")
                    answer = None
                data.setdefault((variant, backend), []).append(answer)

            alternate(rounds, VARIANTS, one)

        def pick(variant: str, backend: str, key: str) -> list[float | None]:
            return [entry.get(key) if entry else None for entry in data.get((variant, backend), [])]

        for backend in BACKENDS:
            case = f"{NAMES[backend]}, {MEMBERS:,} members, 1 process"
            for key, metric in (("p50_ms", "p50 ms"), ("cpu_ms", "CPU ms/send")):
                series = {variant: pick(variant, backend, key) for variant in VARIANTS}
                bench.add(Row(case, metric, "lower", series, tether="publish", peer="group_send"))
            case = f"{NAMES[backend]}, recover {MISSED:,} missed"
            series = {"recover": pick("publish", backend, "recover_p50_ms")}
            bench.add(Row(case, "recover p50 ms", "lower", series, tether="recover"))
    return bench.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker")
    work.add_argument("variant", choices=VARIANTS)
    work.add_argument("backend", choices=BACKENDS)
    work.add_argument("redis_url")
    work.add_argument("prefix")
    work.add_argument("scale", type=float)
    args = parser.parse_args()
    result = asyncio.run(worker(args.variant, args.backend, args.redis_url, args.prefix, args.scale))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
