"""5. Idle connections: the server's resident memory per open WebSocket, at 1,000 and 10,000 connections.

Each round starts a fresh uvicorn process, opens and closes a few connections (so lazy imports and first-use caches
are not counted), takes the RSS as the baseline, then opens 1,000 and then 10,000 echo connections that stay idle.
Per connection = (RSS - baseline) / connections. Both Django stacks serve the same consumer, with no channel layer
and with the Redis layer (each connection then owns a layer channel); the limit is the bare ASGI app. tether on the
Redis layer runs a second time behind the production command of docs/deploying.md (``TUNED_ARGS``). Two load
generators open the connections, half each.

``python -m benchmarks.idle --profile`` says where the memory goes instead: each variant once at 10,000 connections
(the bare app, tether on the Redis layer, and the same behind the tuned server by default; ``--variants``),
with tracemalloc on (``benchmarks/apps/heap.py``), the growth per connection by allocating source line and by object
type, written to ``benchmarks/results/idle-profile.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from typing import Any

from benchmarks.common import (
    BARE_APP,
    DJANGO_APP,
    ROOT,
    Bench,
    LoadGen,
    RedisServer,
    Row,
    Server,
    alternate,
    raise_fd_limit,
    stack_env,
    stopping,
    unavailable_tether_layers,
)

__all__ = ["run"]

COUNTS = (1_000, 10_000)
#: Seconds the tuned server is left before its memory is read: more than the handshake deadline (5 s), whose timer
#: keeps each new connection's HTTP protocol object until it fires.
TUNED_SETTLE = 6.0
#: tether on the Redis layer behind the production command of docs/deploying.md ("Many connections per process").
TUNED = "tether/redis, tuned server"
TUNED_ARGS = [
    "--ws", "tether.drain:WebSocketProtocol", "--http", "tether.handshake:HTTPProtocol",
    "--ws-per-message-deflate", "false",
]  # fmt: skip


def _settle(server: Server, seconds: float = 0.5) -> int:
    time.sleep(seconds)
    return server.rss()


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    bench = Bench("idle", "5. Memory per idle WebSocket connection")
    variants: dict[str, tuple[str, str, str]] = {
        "tether/no layer": (DJANGO_APP, "tether", "none"),
        "channels/no layer": (DJANGO_APP, "channels", "none"),
        "tether/redis": (DJANGO_APP, "tether", "redis"),
        "channels/redis": (DJANGO_APP, "channels", "redis"),
        "bare": (BARE_APP, "tether", "none"),
        TUNED: (DJANGO_APP, "tether", "redis"),
    }
    if unavailable_tether_layers(bench, ["redis"])["redis"]:
        del variants["tether/redis"], variants[TUNED]
    redis_server = RedisServer()
    loadgens = [LoadGen(), LoadGen()]
    per_connection: dict[tuple[str, int], list[float | None]] = {}
    with stopping(redis_server, *loadgens):

        def one(round_index: int, label: str) -> None:
            app, stack, layer = variants[label]
            env = stack_env(stack, layer, redis_server.url, f"bench.idle.{stack}.{layer}.{round_index}.")
            started = time.monotonic()
            held: dict[int, int] = {}

            def held_by(loadgen: LoadGen) -> int:
                return held.get(loadgen.pid, 0)

            with Server("uvicorn", app, env, args=TUNED_ARGS if label == TUNED else []) as server:
                url = f"{server.ws_url}/ws/echo/"
                loadgens[0].request("open", url=url, count=50, concurrency=50)
                loadgens[0].request("close_all")
                baseline = _settle(server)
                for count in COUNTS:
                    for loadgen in loadgens:
                        loadgen.send("open", url=url, count=count // 2 - held_by(loadgen), concurrency=100)
                    answers = [loadgen.answer(timeout=300) for loadgen in loadgens]
                    for loadgen, answer in zip(loadgens, answers, strict=True):
                        held[loadgen.pid] = answer["held"]
                    opened = sum(answer["held"] for answer in answers)
                    failed = sum(answer["failed"] for answer in answers)
                    if failed:
                        bench.note(f"{label} at {count:,}: {failed} connections failed")
                    rss = _settle(server, TUNED_SETTLE if label == TUNED else 0.5 if count <= 1_000 else 1.0)
                    per_connection.setdefault((label, count), []).append(
                        (rss - baseline) / opened / 1024 if opened >= count * 0.99 else None
                    )
                for loadgen in loadgens:
                    loadgen.send("close_all")
                for loadgen in loadgens:
                    loadgen.answer(timeout=300)
                print(f"[idle] {label} round {round_index + 1}: {time.monotonic() - started:.1f} s", file=sys.stderr)

        alternate(rounds, list(variants), one)

    for count in COUNTS:
        for layer in ("no layer", "redis"):
            series = {
                label: per_connection.get((label, count), [None] * rounds)
                for label in (f"tether/{layer}", f"channels/{layer}", "bare")
            }
            if layer == "redis":
                series[TUNED] = per_connection.get((TUNED, count), [None] * rounds)
            bench.add(
                Row(
                    f"{count:,} idle connections, " + ("no layer" if layer == "no layer" else "Redis layer"),
                    "KiB/connection",
                    "lower",
                    series,
                    tether=f"tether/{layer}",
                    peer=f"channels/{layer}",
                    limit="bare",
                )
            )
    return bench.finish()


PROFILE = ROOT / "benchmarks" / "results" / "idle-profile.md"


def _heap(server: Server, query: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/heap?{query}", timeout=600) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def profile(count: int = 10_000, labels: tuple[str, ...] = ("bare", "tether/redis", TUNED)) -> str:
    """Each variant once with ``count`` idle connections and tracemalloc on: where each connection's memory goes."""
    variants = {
        "bare": (BARE_APP, "tether", "none"),
        "tether/no layer": (DJANGO_APP, "tether", "none"),
        "tether/redis": (DJANGO_APP, "tether", "redis"),
        "channels/redis": (DJANGO_APP, "channels", "redis"),
        TUNED: (DJANGO_APP, "tether", "redis"),
    }
    out = [f"# Where an idle connection's memory goes ({count:,} connections, one uvicorn process)", ""]
    out.append("Written by `python -m benchmarks.idle --profile` (tracemalloc on, so RSS is higher than in the")
    out.append("benchmark). Per connection: the growth since a mark taken after warm-up, divided by the connections.")
    redis_server = RedisServer()
    loadgens = [LoadGen(), LoadGen()]
    with stopping(redis_server, *loadgens):
        for label in labels:
            app, stack, layer = variants[label]
            env = {
                **stack_env(stack, layer, redis_server.url, f"bench.idleprof.{stack}.{layer}."),
                "BENCH_TRACEMALLOC": "1",
            }
            with Server("uvicorn", app, env, args=TUNED_ARGS if label == TUNED else []) as server:
                url = f"{server.ws_url}/ws/echo/"
                loadgens[0].request("open", url=url, count=50, concurrency=50)
                loadgens[0].request("close_all")
                _heap(server, "mark")
                baseline = _settle(server)
                for loadgen in loadgens:
                    loadgen.send("open", url=url, count=count // len(loadgens), concurrency=100)
                opened = sum(loadgen.answer(timeout=300)["held"] for loadgen in loadgens)
                rss = _settle(server, TUNED_SETTLE if label == TUNED else 1.0)
                report = _heap(server, f"per={opened}")
                for loadgen in loadgens:
                    loadgen.request("close_all", timeout=300)
            out += [
                "",
                f"## {label}: {(rss - baseline) / opened / 1024:.1f} KiB RSS per connection, "
                f"{report['traced_bytes_per_connection'] / 1024:.1f} KiB traced ({opened:,} connections)",
                "",
            ]
            out += ["| allocated at | bytes/conn | blocks/conn |", "|---|---|---|"]
            out += [f"| `{line['where'].split('site-packages/')[-1].replace(str(ROOT) + '/', '')}` "
                    f"| {line['bytes']:.0f} | {line['blocks']:.2f} |"
                    for line in report["lines"] if abs(line["bytes"]) >= 16]  # fmt: skip
            out += ["", "| live objects of type | count/conn | bytes/conn (getsizeof) |", "|---|---|---|"]
            out += [f"| `{obj['type']}` | {obj['count']:.2f} | {obj['bytes']:.0f} |"
                    for obj in report["objects"] if obj["bytes"] >= 8]  # fmt: skip
            print(f"[idle] profiled {label}", file=sys.stderr)
    text = "\n".join(out) + "\n"
    PROFILE.write_text(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="where the memory goes, instead of the benchmark")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--variants", default="bare,tether/redis,tuned", help=f"'tuned' for {TUNED!r}")
    args = parser.parse_args()
    raise_fd_limit()
    if args.profile:
        print(profile(args.count, tuple(TUNED if name == "tuned" else name for name in args.variants.split(","))))
    else:
        run()
