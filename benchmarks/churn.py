"""6. Connect/disconnect churn: 10,000 cycles of open, join a room, close; time per cycle, RSS growth, leftovers.

One uvicorn process per variant serves the room consumer (it joins a group on connect and leaves it on disconnect, so
the layer's channel and group bookkeeping is exercised). After 500 warm-up cycles its RSS is taken; then the 10,000
cycles run in 3 rounds, alternating between the variants, each from 10 concurrent clients. Reported: wall time per
cycle (elapsed / cycles) and cycle latency p50 per round; then, for the 10,000 cycles as a whole, the RSS growth and
what the layer still holds: ``/stats`` channels + groups for the in-memory layers, keys left under the layer's
prefix for the Redis layers.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import (
    DJANGO_APP,
    Bench,
    LoadGen,
    RedisServer,
    Row,
    Server,
    alternate,
    note_tracebacks,
    stack_env,
    stopping,
    unavailable_tether_layers,
)

__all__ = ["run"]

CYCLES = 10_000
WARMUP = 500
CONCURRENCY = 10


def _leftover(server: Server, redis_server: RedisServer, layer: str, prefix: str) -> tuple[int, dict[str, Any]]:
    """What the layer still holds once the disconnects have been handled (polled for up to 3 s)."""
    deadline = time.monotonic() + 3
    while True:
        state = server.stats()
        if layer == "redis":
            keys = redis_server.keys(prefix)
            state = {**state, "leftover_keys": keys[:20], "leftover_key_count": len(keys)}
            leftover = len(keys)
        else:
            leftover = int(state.get("channels", 0)) + int(state.get("groups", 0))
        if leftover == 0 or time.monotonic() > deadline:
            return leftover, state
        time.sleep(0.2)


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    bench = Bench("churn", "6. Connect/disconnect churn")
    variants: dict[str, tuple[str, str]] = {
        "tether/in-memory": ("tether", "inmemory"),
        "channels/in-memory": ("channels", "inmemory"),
        "tether/redis": ("tether", "redis"),
        "channels/redis": ("channels", "redis"),
    }
    if unavailable_tether_layers(bench, ["redis"])["redis"]:
        del variants["tether/redis"]
    redis_server = RedisServer()
    loadgen = LoadGen()
    measured: dict[tuple[str, str], list[float | None]] = {}
    states: dict[str, dict[str, Any]] = {}
    cycles = max(1_000, int(CYCLES * scale))
    servers: dict[str, Server] = {}
    prefixes = {label: f"bench.churn.{stack}.{layer}." for label, (stack, layer) in variants.items()}
    for label, (stack, layer) in variants.items():
        servers[label] = Server("uvicorn", DJANGO_APP, stack_env(stack, layer, redis_server.url, prefixes[label]))
    with stopping(redis_server, loadgen, *servers.values()):
        before: dict[str, int] = {}
        for server in servers.values():
            server.start()
            url = f"{server.ws_url}/ws/room/churn/"
            loadgen.request("churn", url=url, cycles=WARMUP, concurrency=CONCURRENCY, duration=60)
        time.sleep(0.5)
        for label, server in servers.items():
            before[label] = server.rss()
        done: dict[str, int] = {}

        def one(round_index: int, label: str) -> None:
            server = servers[label]
            share = cycles // rounds + (cycles % rounds if round_index == rounds - 1 else 0)
            url = f"{server.ws_url}/ws/room/churn/"
            answer = loadgen.request("churn", url=url, cycles=share, concurrency=CONCURRENCY, duration=60, timeout=120)
            if answer["failed"]:
                bench.note(f"{label} round {round_index + 1}: {answer['failed']} cycles failed")
            if answer["cycles"] < share:
                bench.note(
                    f"{label} round {round_index + 1}: {answer['cycles']:,} of {share:,} cycles in the time limit"
                )
            done[label] = done.get(label, 0) + answer["cycles"]
            measured.setdefault((label, "wall"), []).append(1000 * answer["elapsed"] / max(1, answer["cycles"]))
            measured.setdefault((label, "p50"), []).append(answer["cycle_p50_ms"])

        alternate(rounds, list(variants), one)
        time.sleep(1.0)
        for label, (_stack, layer) in variants.items():
            server = servers[label]
            growth = (server.rss() - before[label]) / 2**20
            leftover, state = _leftover(server, redis_server, layer, prefixes[label])
            measured[label, "rss"] = [growth]
            measured[label, "leftover"] = [leftover]
            states[label] = {"cycles": done.get(label, 0), **state}
            note_tracebacks(bench, label, [server])

    for layer in ("in-memory", "redis"):
        tether, peer = f"tether/{layer}", f"channels/{layer}"
        case = f"{cycles:,} cycles, {layer} layer"
        for key, metric in (
            ("wall", "ms/cycle (wall, 10 clients)"),
            ("p50", "cycle p50 ms"),
            ("rss", "RSS growth MB (all cycles)"),
            ("leftover", "leftover layer state (after)"),
        ):
            series = {label: measured.get((label, key), [None]) for label in (tether, peer)}
            extra = {"layer_state": {label: states.get(label) for label in (tether, peer)}} if key == "leftover" else {}
            bench.add(Row(case, metric, "lower", series, tether=tether, peer=peer, extra=extra))
    bench.note(
        "Leftover layer state: channels + groups in /stats for in-memory layers, keys under the prefix for Redis."
    )
    return bench.finish()


if __name__ == "__main__":
    run()
