"""3. WebSocket echo through ``AsyncWebsocketConsumer``: 1 and 50 clients in a closed loop, 100-byte text frames.

tether on uvicorn against Channels on uvicorn and on daphne; the limit is a bare ASGI echo app on uvicorn. Both
Django stacks run the same consumer (``benchmarks/apps/django_app.py``) with the in-memory layer configured, as a
default project would. tether and the bare app also run on granian (one worker), in the same rounds, for the target
"tether at or above 0.9x of the bare app on each server"; those rows have no Channels peer. Reported: messages per
second, round-trip p50/p99 and the server's CPU (psutil, the worker included).
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import BARE_APP, DJANGO_APP, Bench, LoadGen, Row, Server, alternate, stack_env, stopping

__all__ = ["run"]


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    bench = Bench("echo", "3. WebSocket echo, AsyncWebsocketConsumer")
    servers = {
        "tether/uvicorn": Server("uvicorn", DJANGO_APP, stack_env("tether", "inmemory")),
        "channels/uvicorn": Server("uvicorn", DJANGO_APP, stack_env("channels", "inmemory")),
        "channels/daphne": Server("daphne", DJANGO_APP, stack_env("channels", "inmemory")),
        "bare/uvicorn": Server("uvicorn", BARE_APP),
        "tether/granian": Server("granian", DJANGO_APP, stack_env("tether", "inmemory")),
        "bare/granian": Server("granian", BARE_APP),
    }
    # Each server's rows: (case suffix, tether, peer, limit).
    tables = (
        ("", "tether/uvicorn", "channels/uvicorn", "bare/uvicorn"),
        (", granian", "tether/granian", None, "bare/granian"),
    )
    loadgen = LoadGen()
    with stopping(*servers.values(), loadgen):
        for server in servers.values():
            server.start()
        duration = 1.5 * scale
        for clients in (1, 50):
            measured: dict[str, dict[str, list[float | None]]] = {
                metric: {label: [] for label in servers} for metric in ("msgs", "p50", "p99", "cpu", "cpu_per_msg")
            }

            def one(round_index: int, label: str, clients: int = clients, measured: dict = measured) -> None:
                server = servers[label]
                cpu_before = server.cpu_seconds()
                result = loadgen.request(
                    "echo",
                    url=f"{server.ws_url}/ws/echo/",
                    clients=clients,
                    duration=duration,
                    max_messages=200_000,
                    size=100,
                    timeout=duration + 60,
                )
                cpu = server.cpu_seconds() - cpu_before
                if result["errors"]:
                    bench.note(f"{label}, {clients} clients: {result['errors']} client errors")
                measured["msgs"][label].append(result["msgs_per_s"])
                measured["p50"][label].append(result["rtt_p50_ms"])
                measured["p99"][label].append(result["rtt_p99_ms"])
                measured["cpu"][label].append(100 * cpu / result["elapsed"])
                measured["cpu_per_msg"][label].append(1e6 * cpu / max(1, result["messages"]))

            alternate(rounds, list(servers), one)
            for suffix, tether, peer, limit in tables:
                case = f"{clients} client" + ("s" if clients > 1 else "") + suffix
                # The uvicorn rows keep daphne beside the peer; the granian rows hold granian's two series only.
                labels = [label for label in servers if label.endswith("/granian") == bool(suffix)]
                for metric, name, better in (
                    ("msgs", "msgs/s", "higher"),
                    ("p50", "RTT p50 ms", "lower"),
                    ("p99", "RTT p99 ms", "lower"),
                    ("cpu", "server CPU %", "lower"),
                    ("cpu_per_msg", "server CPU µs/msg", "lower"),
                ):
                    series = {label: measured[metric][label] for label in labels}
                    bench.add(Row(case, name, better, series, tether=tether, peer=peer, limit=limit))
    bench.note(
        "uvicorn runs with --ws websockets-sansio and uvloop/httptools; granian with --interface asginl (no lifespan, "
        "as uvicorn's --lifespan off), one worker, its default loop; the load generator is one process."
    )
    return bench.finish()


if __name__ == "__main__":
    run()
