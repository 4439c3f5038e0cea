"""3. WebSocket echo through ``AsyncWebsocketConsumer``: 1 and 50 clients in a closed loop, 100-byte text frames.

tether on uvicorn against Channels on uvicorn and on daphne; the limit is a bare ASGI echo app on uvicorn. Both
Django stacks run the same consumer (``benchmarks/apps/django_app.py``) with the in-memory layer configured, as a
default project would. Reported: messages per second, round-trip p50/p99 and the server's CPU (psutil).
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
    }
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
            case = f"{clients} client" + ("s" if clients > 1 else "")
            common = {"tether": "tether/uvicorn", "peer": "channels/uvicorn", "limit": "bare/uvicorn"}
            bench.add(Row(case, "msgs/s", "higher", measured["msgs"], **common))
            bench.add(Row(case, "RTT p50 ms", "lower", measured["p50"], **common))
            bench.add(Row(case, "RTT p99 ms", "lower", measured["p99"], **common))
            bench.add(Row(case, "server CPU %", "lower", measured["cpu"], **common))
            bench.add(Row(case, "server CPU µs/msg", "lower", measured["cpu_per_msg"], **common))
    bench.note("uvicorn runs with --ws websockets-sansio and uvloop/httptools; the load generator is one process.")
    return bench.finish()


if __name__ == "__main__":
    run()
