"""9. Streams: ``publish`` to a stream against a plain ``group_send`` to the same members, and recovery.

* **Publish vs group_send**: 1,000 members in one process (channels from ``new_channel()``, each with a task receiving
  on it, as in benchmark 2) subscribed to one stream. Timed from just before the call until the last member has the
  message: ``streams.publish(stream, data)`` (which also keeps the message and gives it its offset) against
  ``layer.group_send(stream, message)`` of a message of the same shape and size, which keeps nothing. p50 over the
  sends, and the p50 of the CPU time per send (the process's, senders and receivers alike: steadier than wall time
  on a shared machine). The two alternate send by send in one process on the same members (a process's speed varies
  from one start to the next by more than the difference measured), a fresh process per round. In-memory, Redis and
  Redis pub/sub layers.
* **Recovery of 1,000 missed messages**: 1,000 messages published to a stream nobody reads, then
  ``recover(stream, epoch, 0)`` timed from the call until it returns the 1,000 entries (complete): p50 over 20 calls.

``python -m benchmarks.streams worker <backend> <redis url> <prefix> <scale>`` is one round on one layer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

__all__ = ["run"]

MEMBERS = 1_000
SENDS = 40  # timed sends of each kind per round
MISSED = 1_000
RECOVERIES = 20
STREAM = "bench.stream"
BACKENDS = ("inmemory", "redis", "pubsub")
NAMES = {"inmemory": "in-memory", "redis": "Redis", "pubsub": "Redis pub/sub"}
VARIANTS = ("publish", "group_send")
DATA = {"text": "x" * 60}
OTHER = 1_000_000  # group_send's messages are numbered from here


async def worker(backend: str, redis_url: str, prefix: str, scale: float) -> dict[str, Any]:
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

        async def publish(offset: int) -> None:
            await streams.publish(STREAM, DATA)

        async def group_send(offset: int) -> None:
            # Numbered apart from the stream's offsets, so that each send is waited for on its own.
            message = {"type": "stream.message", "stream": STREAM, "epoch": epoch, "offset": offset, "data": DATA}
            await layer.group_send(STREAM, message)

        async def timed(send: Any, offset: int) -> tuple[float, float] | None:
            waiting = asyncio.ensure_future(members.wait(offset, WAIT))
            started, started_cpu = time.monotonic(), time.process_time()
            await send(offset)
            answer = await waiting
            spent_cpu = time.process_time() - started_cpu
            await asyncio.sleep(0.005)
            return None if answer["last"] is None else (answer["last"] - started, spent_cpu)

        measured: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
        warm = 3
        for index in range(1, warm + max(2, round(SENDS * scale)) + 1):
            # The two alternate send by send, in one process, on the same members: what differs is the call alone.
            for variant, send, offset in (("publish", publish, index), ("group_send", group_send, OTHER + index)):
                result = await timed(send, offset)
                if result is None and index > warm:
                    raise RuntimeError(f"a {variant} did not reach every member in {WAIT}s")
                if result is not None and index > warm:  # (a pub/sub warm-up send may come before subscriptions)
                    measured[variant].append(result)
        answer: dict[str, Any] = {}
        for variant, results in measured.items():
            answer[variant] = {
                "p50_ms": (percentile([wall for wall, _ in results], 0.5) or 0) * 1000,
                "cpu_ms": (percentile([cpu for _, cpu in results], 0.5) or 0) * 1000,
            }
        answer["recover_p50_ms"] = await recovery(streams, scale)
    finally:
        await members.stop()
        await close_layer(layer)
    return answer


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
    from benchmarks.common import Bench, RedisServer, Row, run_json, stopping

    bench = Bench("streams", "9. Streams: publish vs group_send, and recovery")
    bench.note(
        f"publish keeps the message and gives it an offset; group_send sends a message of the same shape and keeps "
        f"nothing; the two alternate send by send in one process, on the same {MEMBERS:,} members (a fresh process "
        "per round). CPU ms is the p50 of the process's CPU time per send, until every member has it."
    )
    redis_server = RedisServer()
    data: dict[str, list[dict[str, Any] | None]] = {}
    with stopping(redis_server):
        for round_index in range(rounds):
            for backend in BACKENDS:
                prefix = f"bench.streams.{backend}.{round_index}"
                try:
                    answer = run_json(
                        ["benchmarks.streams", "worker", backend, redis_server.url, prefix, str(scale)], 400
                    )
                except Exception as exc:
                    bench.note(f"{NAMES[backend]} failed: {exc}")
                    answer = None
                data.setdefault(backend, []).append(answer)

        def pick(backend: str, variant: str | None, key: str) -> list[float | None]:
            picked = []
            for answer in data.get(backend, []):
                entry = answer.get(variant) if answer and variant else answer
                picked.append(entry.get(key) if entry else None)
            return picked

        for backend in BACKENDS:
            case = f"{NAMES[backend]}, {MEMBERS:,} members, 1 process"
            for key, metric in (("p50_ms", "p50 ms"), ("cpu_ms", "CPU ms/send")):
                series = {variant: pick(backend, variant, key) for variant in VARIANTS}
                bench.add(Row(case, metric, "lower", series, tether="publish", peer="group_send"))
            case = f"{NAMES[backend]}, recover {MISSED:,} missed"
            series = {"recover": pick(backend, None, "recover_p50_ms")}
            bench.add(Row(case, "recover p50 ms", "lower", series, tether="recover"))
    return bench.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker")
    work.add_argument("backend", choices=BACKENDS)
    work.add_argument("redis_url")
    work.add_argument("prefix")
    work.add_argument("scale", type=float)
    args = parser.parse_args()
    result = asyncio.run(worker(args.backend, args.redis_url, args.prefix, args.scale))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
