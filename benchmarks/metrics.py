"""9. What ``TETHER_METRICS = True`` costs: the same work with metrics off and on, alternating in one run.

Served (uvicorn, ``benchmarks/apps``, the same consumers as ``echo`` and ``broadcast``): a server with metrics off
and one with metrics on (``BENCH_METRICS``; prometheus_client in multiprocess mode, the costlier one, its files in a
temporary ``PROMETHEUS_MULTIPROC_DIR``; the exporter's thread flushing every second as in production).

* WebSocket echo, 1 and 50 clients of the load generator (as ``echo``): messages per second and the server's CPU
  per message (psutil), the cost the issue's target is about.
* ``group_send`` to 1,000 members: 1,000 clients in one room of each server (the room consumer of ``broadcast``),
  one of them posts and the consumer ``group_send``s it to all; in-memory and Redis layers (the Redis one on the
  benchmark's own redis-server). Server CPU per ``group_send`` delivered to all 1,000 (each broadcast timed on its
  own, the two servers taking turns; a round gives the median of its broadcasts), and the p50 until the last member
  has it.

In process (``python -m benchmarks.metrics inprocess``: no server, no sockets, so CPU time is the consumer's alone):
an ``AsyncWebsocketConsumer`` echo driven through its ASGI callables, 20,000 text frames, and a ``group_send`` to
1,000 such consumers on each layer, each writing a frame, 100 sends. Process CPU time (``time.process_time()``, the
exporter's thread included), which other work on a shared machine disturbs far less than wall time: µs per frame
echoed, µs per member reached. The on - off difference is what metrics cost per message, in µs. (A layer stays
instrumented once metrics were on in a process, so there the off rounds time their group_send calls too: one call
per send, a microsecond against milliseconds.)

Every case alternates off and on within each round (off-on, then on-off), so both meet the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["consumer_class", "echo", "group_send", "run"]

ECHO_FRAMES = 20_000
MEMBERS = 1_000
GROUP_SENDS = 100
#: Timed broadcasts per round, layer and mode in the served group_send case (after one warm-up each).
BROADCASTS = 30
WAIT = 20.0
LAYERS = {"inmemory": "in-memory", "redis": "Redis"}
MODES = {False: "metrics off", True: "metrics on"}


# In process ----------------------------------------------------------------------------------------------------------


def consumer_class() -> Any:
    """The echo consumer of the in-process cases (``tracing_cost.py`` uses it too); ``news`` is its group event."""
    from tether.generic.websocket import AsyncWebsocketConsumer

    class Echo(AsyncWebsocketConsumer):
        async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            await self.send(text_data=text_data)

        async def news(self, message: dict[str, Any]) -> None:
            await self.send(text_data=message["text"])

    return Echo


async def echo(app: Any, clock: Callable[[], float] = time.perf_counter) -> float:
    """µs of ``clock`` per echoed frame: the server's side is two callables, fed from a list and counting the sends."""
    frames = iter([{"type": "websocket.connect"}] + [{"type": "websocket.receive", "text": "hello"}] * ECHO_FRAMES)
    done = asyncio.get_running_loop().create_future()
    sent = 0

    async def receive() -> dict[str, Any]:
        message = next(frames, None)
        if message is None:
            await done
            return {"type": "websocket.disconnect", "code": 1000}
        return message

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent
        if message["type"] == "websocket.send":
            sent += 1
            if sent == ECHO_FRAMES:
                done.set_result(None)

    gc.collect()
    started = clock()
    await app({"type": "websocket", "path": "/", "headers": [], "subprotocols": []}, receive, send)
    return (clock() - started) / ECHO_FRAMES * 1e6


async def group_send(app: Any, alias: str = "default", clock: Callable[[], float] = time.perf_counter) -> float:
    """µs of ``clock`` per group_send delivered to all ``MEMBERS`` (in group ``bench``), each of which sends a frame."""
    from tether.layers import get_channel_layer

    layer = get_channel_layer(alias)
    assert layer is not None
    loop = asyncio.get_running_loop()
    closing = loop.create_future()
    joined = 0
    all_joined = loop.create_future()
    received = 0
    all_received: asyncio.Future[None] = loop.create_future()

    def member() -> Any:
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await closing
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: dict[str, Any]) -> None:
            nonlocal joined, received
            if message["type"] == "websocket.accept":
                joined += 1
                if joined == MEMBERS:
                    all_joined.set_result(None)
            elif message["type"] == "websocket.send":
                received += 1
                if received == MEMBERS * GROUP_SENDS:
                    all_received.set_result(None)

        return receive, send

    scope = {"type": "websocket", "path": "/", "headers": [], "subprotocols": []}
    tasks = [loop.create_task(app(scope, *member())) for _ in range(MEMBERS)]
    await all_joined
    await asyncio.sleep(0.05)  # the group_adds behind the accepts
    gc.collect()  # the 1,000 connections' garbage is not the sends' cost
    started = clock()
    for _ in range(GROUP_SENDS):
        await layer.group_send("bench", {"type": "news", "text": "hi"})
        await asyncio.sleep(0)  # let the members drain, as a server would between broadcasts
    await asyncio.wait_for(all_received, WAIT)
    elapsed = clock() - started
    closing.set_result(None)
    await asyncio.gather(*tasks)
    await layer.flush()
    return elapsed / GROUP_SENDS * 1e6


def _setup_django(redis_url: str) -> None:
    import django
    from django.conf import settings

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tether-bench-metrics-"))
    settings.configure(
        INSTALLED_APPS=["tether"],
        CHANNEL_LAYERS={
            "default": {"BACKEND": "tether.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}},
            "redis": {
                "BACKEND": "tether.layers.redis.RedisChannelLayer",
                "CONFIG": {"hosts": [redis_url], "prefix": f"bench.metrics.{os.getpid()}."},
            },
        },
        TETHER_METRICS=False,
    )
    django.setup()


def in_process(rounds: int, scale: float, redis_url: str) -> dict[str, dict[str, list[float]]]:
    """CPU µs per frame (echo) and per member reached (group_send on each layer), metrics off and on, per round."""
    _setup_django(redis_url)
    from django.test import override_settings

    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    echo_class = consumer_class()
    groups = {
        layer: type(f"GroupEcho_{layer}", (echo_class,), {"groups": ["bench"], "channel_layer_alias": alias})
        for layer, alias in (("inmemory", "default"), ("redis", "redis"))
    }
    clock = time.process_time
    results: dict[str, dict[str, list[float]]] = {}
    for index in range(rounds):
        for on in (False, True) if index % 2 == 0 else (True, False):
            with override_settings(TETHER_METRICS=on):
                for _ in range(max(1, round(scale))):
                    value = runner(echo(echo_class.as_asgi(), clock))
                    results.setdefault("echo", {}).setdefault(MODES[on], []).append(value)
                for layer, consumer in groups.items():
                    per_send = runner(group_send(consumer.as_asgi(), consumer.channel_layer_alias, clock))
                    results.setdefault(f"group_send {layer}", {}).setdefault(MODES[on], []).append(per_send / MEMBERS)
    return results


# Served --------------------------------------------------------------------------------------------------------------


def cpu_seconds(server: Any) -> float:
    """The CPU time of ``server``'s threads so far, from ``/proc/<pid>/task/*/schedstat`` (nanoseconds).

    psutil's figure (``Server.cpu_seconds``) comes in clock ticks of 10 ms: a few percent of a round of these short
    cases, the size of the difference measured. Elsewhere than Linux, psutil's it is.
    """
    tasks = Path(f"/proc/{server.pid}/task")
    if not tasks.is_dir():
        return float(server.cpu_seconds())
    total = 0
    for task in tasks.iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    from benchmarks.common import (
        DJANGO_APP,
        Bench,
        LoadGen,
        RedisServer,
        Row,
        Server,
        median,
        note_tracebacks,
        percentile,
        run_json,
        stack_env,
        stopping,
    )

    bench = Bench("metrics", "9. Metrics on against metrics off (TETHER_METRICS)")
    multiproc_dir = tempfile.TemporaryDirectory(prefix="tether-bench-metrics-")
    redis_server = RedisServer()
    on_env = {"BENCH_METRICS": "1", "PROMETHEUS_MULTIPROC_DIR": multiproc_dir.name}
    modes = list(MODES.values())

    def servers_for(layer: str, prefix: str) -> dict[str, Server]:
        # One hash seed for both: string hashing and dict layouts are then the same in both processes.
        base = {
            **stack_env("tether", layer, redis_server.url if layer == "redis" else None, prefix),
            "PYTHONHASHSEED": "0",
        }
        return {
            MODES[False]: Server("uvicorn", DJANGO_APP, {**base, "BENCH_METRICS": "0"}),
            MODES[True]: Server("uvicorn", DJANGO_APP, {**base, **on_env}),
        }

    def add(case: str, metric: str, better: str, series: dict[str, list[float | None]]) -> None:
        bench.add(Row(case, metric, better, series, tether=MODES[True], peer=MODES[False]))

    with stopping(redis_server):
        # In process first, while nothing else of this benchmark runs.
        try:
            answer = run_json(
                ["benchmarks.metrics", "inprocess", str(rounds), str(scale), redis_server.url], timeout=900
            )
        except Exception as exc:
            bench.note(f"in-process cases failed: {exc}")
            answer = {}
        for case, series in answer.items():
            label = "µs/frame" if case == "echo" else "µs/member"
            add(f"in process: {case.replace('inmemory', 'in-memory').replace('redis', 'Redis')}", f"CPU {label}",
                "lower", {mode: series[mode] for mode in modes})  # fmt: skip
            off, on = median(series[MODES[False]]), median(series[MODES[True]])
            if off is not None and on is not None:
                bench.note(f"in process, {case}: metrics add {on - off:.2f} µs of CPU per {label.split('/')[1]}")

        # Echo over uvicorn. Fresh servers every round: a process's own luck (its hash seed, where its memory landed)
        # moved one of two long-lived servers 15% from the other in a run, metrics or not. Three times make bench's
        # rounds, shorter ones: the difference sought is a few percent, as is one round's noise.
        duration = 1.0 * scale
        rate = {clients: {mode: [] for mode in modes} for clients in (1, 50)}
        cpu = {clients: {mode: [] for mode in modes} for clients in (1, 50)}
        with stopping(loadgen := LoadGen()):
            for round_index in range(3 * rounds):
                servers = servers_for("inmemory", f"bench.metrics.echo.{round_index}.")
                with stopping(*servers.values()):
                    for server in servers.values():
                        server.start()
                    for clients in (1, 50):
                        for mode in modes if round_index % 2 == 0 else reversed(modes):
                            server = servers[mode]
                            before = cpu_seconds(server)
                            result = loadgen.request(
                                "echo", url=f"{server.ws_url}/ws/echo/", clients=clients, duration=duration,
                                max_messages=200_000, size=100, timeout=duration + 60,
                            )  # fmt: skip
                            spent = cpu_seconds(server) - before
                            if result["errors"]:
                                bench.note(f"echo {mode}, {clients} clients: {result['errors']} client errors")
                            rate[clients][mode].append(result["msgs_per_s"])
                            cpu[clients][mode].append(1e6 * spent / max(1, result["messages"]))
                    note_tracebacks(bench, "echo", list(servers.values()))
        for clients in (1, 50):
            case = f"echo, {clients} client" + ("s" if clients > 1 else "")
            add(case, "server CPU µs/msg", "lower", cpu[clients])
            add(case, "msgs/s", "higher", rate[clients])

        # group_send to 1,000 members over uvicorn, one layer at a time: a room of 1,000 clients on each server, fresh
        # servers and rooms every round (as for the echo).
        ident = 0
        for layer, name in LAYERS.items():
            per_send: dict[str, list[float | None]] = {mode: [] for mode in modes}
            p50: dict[str, list[float | None]] = {mode: [] for mode in modes}
            generators = [LoadGen(), LoadGen()]
            with stopping(*generators):
                for round_index in range(rounds):
                    # Each load generator serves the other mode in the next round: its own luck falls on both.
                    loadgens = dict(
                        zip(modes, generators[round_index % 2 :] + generators[: round_index % 2], strict=True)
                    )
                    servers = servers_for(layer, f"bench.metrics.{layer}.{round_index}.")
                    with stopping(*servers.values()):
                        for server in servers.values():
                            server.start()
                        for mode, server in servers.items():
                            joined = loadgens[mode].request(
                                "room_join", urls=[f"{server.ws_url}/ws/room/metrics/"], count=MEMBERS,
                                concurrency=50, timeout=300,
                            )  # fmt: skip
                            if joined["failed"]:
                                bench.note(f"{name}, {mode}: {joined['failed']} of {MEMBERS:,} connections failed")
                        # Broadcasts alternate between the two servers (off-on, then on-off), each timed on its own
                        # (the server's CPU from schedstat, in ns): a round's value is the median of its broadcasts,
                        # so a garbage collection or a burst of other work on the machine lands in one sample, not in
                        # one mode's total (a round's totals swung 0.88x-1.30x on/off in one run of the sum).
                        cpu_samples: dict[str, list[float]] = {mode: [] for mode in modes}
                        samples: dict[str, list[float]] = {mode: [] for mode in modes}
                        failed = False
                        for attempt in range(BROADCASTS + 1):  # the first is a warm-up
                            for mode in modes if attempt % 2 == 0 else reversed(modes):
                                server, loadgen = servers[mode], loadgens[mode]
                                ident += 1
                                before = cpu_seconds(server)
                                t0 = loadgen.request("room_send", id=ident)["t0"]
                                loadgen.send("room_wait", id=ident, timeout=WAIT)
                                answer = loadgen.answer(timeout=WAIT + 30)
                                spent = cpu_seconds(server) - before
                                if answer["last"] is None or answer["received"] < answer["expected"]:
                                    got = answer["received"]
                                    bench.note(f"{name}, {mode}: a group_send reached {got} of {MEMBERS:,}")
                                    failed = True
                                    break
                                if attempt:
                                    samples[mode].append(answer["last"] - t0)
                                    cpu_samples[mode].append(spent)
                                time.sleep(0.02)
                            if failed:
                                break
                        for mode in modes:
                            cpu_value = None if failed else median(cpu_samples[mode])
                            per_send[mode].append(None if cpu_value is None else cpu_value * 1e3)
                            value = None if failed else percentile(samples[mode], 0.5)
                            p50[mode].append(None if value is None else value * 1000)
                        for loadgen in loadgens.values():
                            loadgen.request("close_all", timeout=120)
                        note_tracebacks(bench, f"group_send, {name}", list(servers.values()))
            case = f"group_send to {MEMBERS:,} members, {name} layer"
            add(case, "server CPU ms/group_send", "lower", per_send)
            add(case, "p50 ms", "lower", p50)
    multiproc_dir.cleanup()
    bench.note(
        "One uvicorn process per mode (--ws websockets-sansio, uvloop), the in-memory layer for echo; metrics on runs "
        "prometheus_client in multiprocess mode. The target is the server CPU rows' on/off ratio (the issue's 'cost')."
    )
    return bench.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inprocess = sub.add_parser("inprocess", help="the in-process cases; prints one JSON line")
    inprocess.add_argument("rounds", type=int)
    inprocess.add_argument("scale", type=float)
    inprocess.add_argument("redis_url")
    args = parser.parse_args()
    if args.command == "inprocess":
        print(json.dumps(in_process(args.rounds, args.scale, args.redis_url)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
