"""4. Chat-room broadcast: one client posts, every member of the room gets it; 100, 1,000 and 5,000 WebSocket clients.

The room consumer (``benchmarks/apps/django_app.py``) joins a group on connect and ``group_send``s what it receives.
Servers: 1 uvicorn process, or 2 sharing the benchmark's redis-server with clients spread evenly over both. Clients
come from 2 load-generator processes. Measured from the moment the sender's frame leaves until the last member has
it (``time.monotonic()``, one clock across processes): p50 and p99 over repeated broadcasts. The limit is a bare
ASGI app that fans out in memory (1 process only: it has no way to reach another). tether on the Redis layer and the
bare app also run on one granian worker, in the same rounds: the rows whose case ends in ", granian".
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
    note_tracebacks,
    percentile,
    stack_env,
    stopping,
    unavailable_tether_layers,
)

__all__ = ["run"]

SIZES = (100, 1_000, 5_000)
REPEATS = {100: 8, 1_000: 5, 5_000: 2}
WAIT = 20.0
SKIP_ABOVE = 5.0  # seconds: a size whose broadcast would take longer than this (linear extrapolation) is not run


#: The suffix of the labels of the variants served by granian (uvicorn serves the others).
GRANIAN = " granian"


def _variants(unavailable: str | None) -> dict[str, tuple[str, str, str, int]]:
    """label -> (app, stack, layer, processes); a label ending in ``GRANIAN`` is served by granian."""
    variants = {
        "tether/redis x1": (DJANGO_APP, "tether", "redis", 1),
        "channels/redis x1": (DJANGO_APP, "channels", "redis", 1),
        "tether/redis x2": (DJANGO_APP, "tether", "redis", 2),
        "channels/redis x2": (DJANGO_APP, "channels", "redis", 2),
        "tether/in-memory x1": (DJANGO_APP, "tether", "inmemory", 1),
        "channels/in-memory x1": (DJANGO_APP, "channels", "inmemory", 1),
        "bare x1": (BARE_APP, "bare", "none", 1),
        "tether/redis x1" + GRANIAN: (DJANGO_APP, "tether", "redis", 1),
        "bare x1" + GRANIAN: (BARE_APP, "bare", "none", 1),
    }
    if unavailable:
        variants = {label: spec for label, spec in variants.items() if not label.startswith("tether/redis")}
    return variants


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    bench = Bench("broadcast", "4. Chat-room broadcast over WebSockets")
    unavailable = unavailable_tether_layers(bench, ["redis"])["redis"]
    redis_server = RedisServer()
    loadgens = [LoadGen(), LoadGen()]
    variants = _variants(unavailable)
    latencies: dict[tuple[str, int, str], list[float | None]] = {}
    with stopping(redis_server, *loadgens):

        def one(round_index: int, label: str) -> None:
            app, stack, layer, processes = variants[label]
            env = stack_env(
                stack if stack != "bare" else "tether",
                layer,
                redis_server.url,
                f"bench.broadcast.{stack}.{processes}.{round_index}.{'g.' if label.endswith(GRANIAN) else ''}",
            )
            kind = "granian" if label.endswith(GRANIAN) else "uvicorn"
            servers = [Server(kind, app, env) for _ in range(processes)]
            with stopping(*servers):
                for server in servers:
                    server.start()
                room = f"r{round_index}"
                urls = [f"{server.ws_url}/ws/room/{room}/" for server in servers]
                ident = 0
                lost = False
                members = [0] * len(loadgens)
                previous: tuple[int, float] | None = None
                started = time.monotonic()
                for size in SIZES:
                    if layer == "inmemory" and size > 1_000 and not lost:
                        lost = True  # context rows: 100 and 1,000 only, to keep `make bench` short
                    if previous is not None and previous[1] * size / previous[0] > SKIP_ABOVE:
                        bench.note(
                            f"{label}: {size:,} clients not run: {previous[0]:,} took {previous[1] * 1000:.0f} ms, "
                            f"so {size:,} would take over {SKIP_ABOVE:.0f} s a broadcast even growing linearly"
                        )
                        lost = True
                    if lost:
                        latencies.setdefault((label, size, "p50"), []).append(None)
                        latencies.setdefault((label, size, "p99"), []).append(None)
                        continue
                    for index, loadgen in enumerate(loadgens):
                        # Spread over the servers: generator 0 starts at server 0, generator 1 at the other one.
                        order = urls[index % len(urls) :] + urls[: index % len(urls)]
                        add = size // len(loadgens) - members[index]
                        loadgen.send("room_join", urls=order, count=add, concurrency=50)
                    joined = [loadgen.answer(timeout=300) for loadgen in loadgens]
                    members = [answer["members"] for answer in joined]
                    if any(answer["failed"] for answer in joined):
                        bench.note(f"{label} at {size:,}: {sum(a['failed'] for a in joined)} connections failed")
                    samples: list[float] = []
                    repeats = REPEATS[size]
                    for attempt in range(repeats + 1):  # the first is a warm-up
                        ident += 1
                        t0 = loadgens[0].request("room_send", id=ident)["t0"]
                        for loadgen in loadgens:
                            loadgen.send("room_wait", id=ident, timeout=WAIT)
                        answers = [loadgen.answer(timeout=WAIT + 30) for loadgen in loadgens]
                        if any(answer["last"] is None or answer["received"] < answer["expected"] for answer in answers):
                            got = sum(answer["received"] for answer in answers)
                            bench.note(f"{label} at {size:,}: a broadcast reached {got} of {size:,} members in {WAIT}s")
                            lost = True
                            break
                        if attempt:
                            samples.append(max(answer["last"] for answer in answers) - t0)
                        time.sleep(0.02)
                    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
                    if p50 is not None:
                        previous = (size, p50)
                    dropped = sum(answer["dropped"] for answer in answers)
                    if dropped:
                        bench.note(f"{label} at {size:,}: the server closed {dropped} member connection(s) on its side")
                    latencies.setdefault((label, size, "p50"), []).append(p50 * 1000 if p50 is not None else None)
                    latencies.setdefault((label, size, "p99"), []).append(p99 * 1000 if p99 is not None else None)
                for loadgen in loadgens:
                    loadgen.request("close_all", timeout=120)
                note_tracebacks(bench, f"{label} round {round_index + 1}", servers)
                print(
                    f"[broadcast] {label} round {round_index + 1}: {time.monotonic() - started:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )

        alternate(rounds, list(variants), one)

    for processes in (1, 2):
        for size in SIZES:
            for key in ("p50", "p99"):
                suffix = f" x{processes}"
                series = {
                    label.removesuffix(suffix): latencies.get((label, size, key), [None] * rounds)
                    for label in variants
                    if label.endswith(suffix)
                }
                if processes == 2:
                    series.setdefault("tether/redis", [None] * rounds)
                case = f"{size:,} clients, {processes} server process" + ("es" if processes > 1 else "")
                bench.add(
                    Row(
                        case,
                        f"{key} ms",
                        "lower",
                        {"tether/redis": series.pop("tether/redis", [None] * rounds), **series},
                        tether="tether/redis",
                        peer="channels/redis",
                        limit="bare" if processes == 1 else None,
                    )
                )
    for size in SIZES:
        for key in ("p50", "p99"):
            series = {
                label: latencies.get((f"{label} x1{GRANIAN}", size, key), [None] * rounds)
                for label in ("tether/redis", "bare")
            }
            case = f"{size:,} clients, 1 server process, granian"
            bench.add(Row(case, f"{key} ms", "lower", series, tether="tether/redis", limit="bare"))
    bench.note(
        "The in-memory rows are extra context (one process, 100 and 1,000 clients); the peer for the target is "
        "channels + channels_redis on the same server."
    )
    return bench.finish()


if __name__ == "__main__":
    run()
