"""9. Capacity: as many WebSockets as one uvicorn process can hold (50,000 where the limits allow), idle, then one
broadcast to all of them.

tether's room consumer (``benchmarks/apps/django_app.py``) on the Redis layer: every connection joins one group.
Five load-generator processes open the connections, each from a source address of its own (127.0.0.2 to 127.0.0.6,
so that no address runs out of ephemeral ports), 20 handshakes at a time each (channels_redis's connection pool
refuses more), at most ``CONNECT_WITHIN`` seconds for all of them. Measured at 10,000 connections and at the full
count, each on a fresh server: resident memory per connection ((RSS - baseline) / connections, with the connections
idle and again after the broadcasts), the wall time to open them all (connect, handshake, ``group_add``), and the
time from one client's frame until the last member has the broadcast (``group_send`` to everyone; one warm-up, then
the median of ``REPEATS``). The peer, Channels with channels_redis on the same server, runs at 10,000 only; the limit
is the bare ASGI app, which fans out in memory.

One socket is one file descriptor: the benchmark raises its open-file limit (``resource.setrlimit``, inherited by the
server and the load generators) and, when the hard limit is below what the full count needs and may not be raised
(no root or CAP_SYS_RESOURCE), runs at the largest count it allows and says so in a note. One round by default: a
full run takes minutes and gigabytes (``make bench BENCH=capacity``).
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
    median,
    note_tracebacks,
    raise_fd_limit,
    stack_env,
    stopping,
    unavailable_tether_layers,
)

__all__ = ["run"]

FULL = 50_000
PEER_COUNT = 10_000
SOURCES = tuple(f"127.0.0.{host}" for host in range(2, 7))
CONNECT_WITHIN = 300.0  # seconds for all the connections of one step
REPEATS = 3
#: What each count measures; memory first with every connection idle, then again after the broadcasts (a tether
#: connection starts its channel reader when the first message reaches it).
METRICS = ("KiB/connection", "KiB/connection after broadcasts", "s to connect all", "s until all have the broadcast")
WAIT = 60.0  # seconds a broadcast may take to reach everyone
#: File descriptors the server needs beside its sockets (Python, Django, Redis connections, the listening socket).
SPARE_FDS = 500


def _settle(server: Server, seconds: float) -> int:
    time.sleep(seconds)
    return server.rss()


def run(rounds: int = 1, scale: float = 1.0) -> dict[str, Any]:
    bench = Bench("capacity", f"9. Capacity: up to {FULL:,} WebSockets on one uvicorn process")
    rounds = 1  # minutes and gigabytes per round: once, whatever --rounds says (see the module's docs)
    limit = raise_fd_limit(at_least=FULL + SPARE_FDS)
    full = min(FULL, (limit - SPARE_FDS) // 1000 * 1000)
    if full < FULL:
        bench.note(
            f"{FULL:,} connections need {FULL + SPARE_FDS:,} open files in the server process; the hard limit here is "
            f"{limit:,} and may not be raised (no CAP_SYS_RESOURCE), so the full count is {full:,}"
        )
    counts = {"tether/redis": (PEER_COUNT, full), "channels/redis": (PEER_COUNT,), "bare": (PEER_COUNT, full)}
    stacks = {"tether/redis": ("tether", "redis"), "channels/redis": ("channels", "redis"), "bare": ("tether", "none")}
    if unavailable_tether_layers(bench, ["redis"])["redis"]:
        del counts["tether/redis"]
    redis_server = RedisServer()
    loadgens = [LoadGen() for _ in SOURCES]
    measured: dict[tuple[str, int, str], list[float | None]] = {}
    with stopping(redis_server, *loadgens):

        def one(round_index: int, label: str) -> None:
            for count in counts[label]:
                one_count(round_index, label, count)

        def one_count(round_index: int, label: str, count: int) -> None:
            """A fresh server: ``count`` connections opened, idle, measured, then the broadcasts."""
            stack, layer = stacks[label]
            env = stack_env(stack, layer, redis_server.url, f"bench.capacity.{stack}.{round_index}.{count}.")
            server = Server("uvicorn", BARE_APP if label == "bare" else DJANGO_APP, env)
            started = time.monotonic()
            with stopping(server):
                server.start()
                url = f"{server.ws_url}/ws/room/all/"
                loadgens[0].request("room_join", urls=[url], count=50, concurrency=50)
                loadgens[0].request("close_all")
                baseline = _settle(server, 1.0)
                began = time.monotonic()
                for index, (loadgen, source) in enumerate(zip(loadgens, SOURCES, strict=True)):
                    add = count * (index + 1) // len(loadgens) - count * index // len(loadgens)
                    loadgen.send("room_join", urls=[url], count=add, concurrency=20, source=source,
                                 within=CONNECT_WITHIN)  # fmt: skip
                answers = [loadgen.answer(timeout=CONNECT_WITHIN + 120) for loadgen in loadgens]
                connect_s = time.monotonic() - began
                failed = sum(answer["failed"] for answer in answers)
                if failed:
                    bench.note(f"{label} at {count:,}: {failed:,} connections failed or were not started in time")
                total = sum(answer["members"] for answer in answers)
                complete = total >= count * 0.99
                idle = (_settle(server, 2.0) - baseline) / max(total, 1) / 1024
                samples: list[float] = []
                for attempt in range(REPEATS + 1):  # the first is a warm-up
                    t0 = loadgens[0].request("room_send", id=attempt + 1)["t0"]
                    for loadgen in loadgens:
                        loadgen.send("room_wait", id=attempt + 1, timeout=WAIT)
                    waited = [loadgen.answer(timeout=WAIT + 60) for loadgen in loadgens]
                    got = sum(answer["received"] for answer in waited)
                    if any(answer["last"] is None or answer["received"] < answer["expected"] for answer in waited):
                        bench.note(f"{label} at {count:,}: a broadcast reached {got:,} of {total:,} in {WAIT:g} s")
                        break
                    if attempt:
                        samples.append(max(answer["last"] for answer in waited) - t0)
                busy = (_settle(server, 1.0) - baseline) / max(total, 1) / 1024
                results = {
                    "KiB/connection": idle,
                    "KiB/connection after broadcasts": busy,
                    "s to connect all": connect_s,
                    "s until all have the broadcast": median(samples) if samples else None,
                }
                for metric, value in results.items():
                    measured.setdefault((label, count, metric), []).append(value if complete else None)
                for loadgen in loadgens:
                    loadgen.send("close_all")
                for loadgen in loadgens:
                    loadgen.answer(timeout=300)
                note_tracebacks(bench, f"{label} at {count:,}", [server])
            print(
                f"[capacity] {label} at {total:,}: {idle:.1f} KiB/connection idle, {busy:.1f} after the broadcasts, "
                f"connected in {connect_s:.1f} s, broadcasts {[round(sample, 3) for sample in samples]} s "
                f"({time.monotonic() - started:.1f} s in all)",
                file=sys.stderr,
                flush=True,
            )

        alternate(rounds, list(counts), one)

    for count in sorted({PEER_COUNT, full}):
        for metric in METRICS:
            series = {label: measured.get((label, count, metric), [None] * rounds) for label in counts}
            bench.add(
                Row(
                    f"{count:,} connections, Redis layer",
                    metric,
                    "lower",
                    series,
                    tether="tether/redis",
                    peer="channels/redis" if count == PEER_COUNT else None,
                    limit="bare",
                )
            )
    bench.note(
        "Each count runs on a fresh server. KiB/connection is measured with the connections idle, before the "
        "broadcasts; a tether connection starts its channel reader when the first message reaches it, hence the row "
        "after the broadcasts. Connect times are wall-clock on a shared 2-core machine: the load generators use the "
        "same cores as the server."
    )
    return bench.finish()


if __name__ == "__main__":
    run()
