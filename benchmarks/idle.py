"""5. Idle connections: the server's resident memory per open WebSocket, at 1,000 and 10,000 connections.

Each round starts a fresh uvicorn process, opens and closes a few connections (so lazy imports and first-use caches
are not counted), takes the RSS as the baseline, then opens 1,000 and then 10,000 echo connections that stay idle.
Per connection = (RSS - baseline) / connections. Both Django stacks serve the same consumer, with no channel layer
and with the Redis layer (each connection then owns a layer channel); the limit is the bare ASGI app. Two load
generators open the connections, half each.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from benchmarks.common import (
    BARE_APP,
    DJANGO_APP,
    Bench,
    LoadGen,
    RedisServer,
    Row,
    Server,
    alternate,
    stack_env,
    stopping,
    unavailable_tether_layers,
)

__all__ = ["run"]

COUNTS = (1_000, 10_000)


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
    }
    if unavailable_tether_layers(bench, ["redis"])["redis"]:
        del variants["tether/redis"]
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

            with Server("uvicorn", app, env) as server:
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
                    rss = _settle(server, 0.5 if count <= 1_000 else 1.0)
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


if __name__ == "__main__":
    run()
