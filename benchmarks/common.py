"""What every benchmark needs: free ports, a private redis-server, ASGI servers and load generators as subprocesses,
and the statistics and table that every benchmark prints the same way.

Nothing here measures anything by itself; the benchmark modules (``layer``, ``fanout``, ``echo``, ...) do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "BARE_APP",
    "DJANGO_APP",
    "PYTHON",
    "ROOT",
    "Bench",
    "LoadGen",
    "RedisClusterServers",
    "RedisServer",
    "Row",
    "Server",
    "alternate",
    "free_port",
    "median",
    "note_tracebacks",
    "percentile",
    "raise_fd_limit",
    "run_async",
    "stack_env",
    "tether_layer_unavailable",
    "unavailable_tether_layers",
]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: The consumers of both Django stacks (``benchmarks/apps/django_app.py``), served by ``Server``.
DJANGO_APP = "benchmarks.apps.django_app:application"
#: The no-framework limit (``benchmarks/apps/bare_app.py``).
BARE_APP = "benchmarks.apps.bare_app:application"


# Numbers -------------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


# Processes and ports -------------------------------------------------------------------------------------------------


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion in a benchmark's subprocess, on uvloop when it is installed (as the servers run)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit(at_least: int = 0) -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it); return the new soft limit.

    With ``at_least``, the hard limit is raised to that first where the process may (root, or CAP_SYS_RESOURCE; the
    kernel's ``fs.nr_open`` bounds it); otherwise the soft limit stays at the hard one, and the caller sees less.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if at_least > hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, at_least))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def tether_layer_unavailable(backend: str) -> str | None:
    """None when tether's layer for ``backend`` (``redis`` or ``pubsub``) imports; otherwise why not, for the note."""
    name = {"redis": "RedisChannelLayer", "pubsub": "RedisPubSubChannelLayer"}.get(backend)
    if name is None:
        return None
    try:
        module = __import__("tether.layers.redis", fromlist=[name])
        getattr(module, name)
    except Exception as exc:  # ImportError now; anything while the layer is being written
        return f"tether.layers.redis.{name} is not importable yet ({type(exc).__name__}: {exc})"
    return None


def unavailable_tether_layers(bench: Bench, backends: Iterable[str]) -> dict[str, str | None]:
    """``backend -> tether_layer_unavailable(backend)`` for each backend, with every reason noted in ``bench``."""
    unavailable = {backend: tether_layer_unavailable(backend) for backend in backends}
    for reason in unavailable.values():
        if reason:
            bench.note(f"tether rows skipped: {reason}")
    return unavailable


def stack_env(stack: str, layer: str, redis_url: str | None = None, prefix: str | None = None) -> dict[str, str]:
    """The environment that makes ``DJANGO_APP`` run ``stack`` with ``layer`` (see ``benchmarks/apps/settings.py``)."""
    env = {"BENCH_STACK": stack, "BENCH_LAYER": layer}
    if redis_url is not None:
        env["BENCH_REDIS_URL"] = redis_url
    if prefix is not None:
        env["BENCH_PREFIX"] = prefix
    return env


class RedisServer:
    """A redis-server of our own on a free port of 127.0.0.1, without persistence; stopped by ``stop()``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.proc, 10, "redis-server")
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def commandstats(self) -> dict[str, int]:
        """Calls per command since the server started (``INFO commandstats``), without ``info`` itself."""
        stats = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name != "cmdstat_info"
        }

    def keys(self, prefix: str) -> list[str]:
        return sorted(key.decode() for key in self.client.scan_iter(match=f"{prefix}*", count=1000))

    def stop(self) -> None:
        self.client.close()
        _stop(self.proc)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisClusterServers:
    """A 3-master Redis Cluster (no replicas) of our own on free ports of 127.0.0.1, made with ``redis-cli --cluster
    create``, without persistence; stopped by ``stop()``."""

    def __init__(self, masters: int = 3) -> None:
        import redis

        self.directory = tempfile.TemporaryDirectory(prefix="tether-bench-cluster-")
        self.ports = [_free_port_with_bus() for _ in range(masters)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                       "--cluster-node-timeout", "5000"]  # fmt: skip
            self.procs.append(
                subprocess.Popen(command, cwd=self.directory.name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port, proc in zip(self.ports, self.procs, strict=True):
            _wait_for_port(port, proc, 10, "redis-server (cluster)")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        self.clients = [redis.Redis(host="127.0.0.1", port=port) for port in self.ports]
        deadline = time.monotonic() + 30
        while not all(client.cluster("info")["cluster_state"] == "ok" for client in self.clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's Redis Cluster did not become ready in 30 s")
            time.sleep(0.1)

    @property
    def host(self) -> dict[str, Any]:
        """The layer's ``hosts`` entry for this cluster."""
        return {"address": f"redis://127.0.0.1:{self.ports[0]}/0", "cluster": True}

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for proc in self.procs:
            _stop(proc)
        self.directory.cleanup()


def _free_port_with_bus() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair for a cluster node")


def commands_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Per-command call counts made between two ``commandstats()`` snapshots."""
    delta = {name: after[name] - before.get(name, 0) for name in after}
    return {name: count for name, count in sorted(delta.items()) if count}


@dataclass
class Server:
    """An ASGI server (uvicorn, granian or daphne) in its own process, serving one of ``benchmarks.apps``.

    ``env`` picks the stack and the layer (see ``benchmarks/apps/settings.py``). granian runs one worker process under
    its supervisor process; ``rss()`` and ``cpu_seconds()`` count the whole tree, so the figures compare.
    """

    kind: str
    app: str
    env: dict[str, str] = field(default_factory=dict)
    #: More command-line options for the server, after the benchmark's own (a later option wins over an earlier one).
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[Any] | None = None
    log: Any = None

    def start(self) -> Server:
        self.port = free_port()
        if self.kind == "uvicorn":
            command = [
                PYTHON, "-m", "uvicorn", self.app, "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning", "--no-access-log", "--lifespan", "off", "--ws", "websockets-sansio",
                "--backlog", "4096",
            ]  # fmt: skip
        elif self.kind == "granian":
            # asginl is granian's ASGI without the lifespan protocol, as uvicorn's --lifespan off above.
            command = [
                PYTHON, "-m", "granian", "--interface", "asginl", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--log-level", "warning", "--backlog", "4096", self.app,
            ]  # fmt: skip
        elif self.kind == "daphne":
            command = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "-v", "0", self.app]
        else:
            raise ValueError(f"unknown server kind {self.kind!r}")
        command += self.args
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "benchmarks.apps.settings", **self.env}
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{self.kind}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        _wait_for_port(self.port, self.proc, 30, f"{self.kind} {self.app}")
        return self

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _processes(self) -> list[Any]:
        """The server process and its children (granian's worker), those still running."""
        import psutil

        process = psutil.Process(self.pid)
        return [process, *process.children(recursive=True)]

    def rss(self) -> int:
        """Resident memory of the server process and its children, in bytes."""
        return sum(int(process.memory_info().rss) for process in self._processes())

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of the server process and its children so far."""
        return sum(float(t.user + t.system) for t in (process.cpu_times() for process in self._processes()))

    def stats(self) -> dict[str, Any]:
        """What the app's ``/stats`` endpoint says about its channel layer."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as response:
            return json.loads(response.read())

    def errors(self) -> int:
        """How many tracebacks the server has written to its log so far (its stderr goes to ``self.log``)."""
        if self.log is None:
            return 0
        return Path(self.log.name).read_text(errors="replace").count("Traceback (most recent call last)")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        if self.log is not None:
            self.log.close()
            if not self.errors():
                Path(self.log.name).unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def note_tracebacks(bench: Bench, what: str, servers: Sequence[Server]) -> None:
    """Note in ``bench`` how many tracebacks ``servers`` logged, naming their log files, when there are any."""
    tracebacks = sum(server.errors() for server in servers)
    if tracebacks:
        logs = ", ".join(server.log.name for server in servers)
        bench.note(f"{what}: the server logged {tracebacks} traceback(s) ({logs})")


class LoadGen:
    """A load generator in its own process (``benchmarks/loadgen.py``), driven by JSON lines over its stdin/stdout."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "benchmarks.loadgen"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.pid = self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def request(self, op: str, timeout: float = 120, **params: Any) -> dict[str, Any]:
        """Send one command, wait for its answer (raises ``RuntimeError`` on its error or on ``timeout``)."""
        self.send(op, **params)
        return self.answer(timeout)

    def send(self, op: str, **params: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = 120) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"load generator did not answer within {timeout}s") from None
        if line is None:
            raise RuntimeError(f"load generator exited with code {self.proc.wait()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load generator: {answer['error']}")
        return answer

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send("exit")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            _stop(self.proc)

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_json(args: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m <args>`` to completion and return the JSON object on its last stdout line."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(
        [PYTHON, "-m", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


# Rounds, rows and tables ---------------------------------------------------------------------------------------------


def alternate(rounds: int, variants: Sequence[str], run: Callable[[int, str], None]) -> None:
    """Run every variant once per round, A B C then C B A, so drift on a shared machine falls on both sides."""
    for index in range(rounds):
        order = list(variants) if index % 2 == 0 else list(reversed(variants))
        for variant in order:
            run(index, variant)


@dataclass
class Row:
    """One line of a benchmark's table: one case, one metric, a value per round for each series.

    ``tether`` names the series under test, ``peer`` the Channels series it is held against (ratio per round),
    ``limit`` the no-framework series. ``better`` is ``"higher"`` or ``"lower"``.
    """

    case: str
    metric: str
    better: str
    series: dict[str, list[float | None]]
    tether: str
    peer: str | None = None
    limit: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def medians(self) -> dict[str, float | None]:
        return {label: median(values) for label, values in self.series.items()}

    def ratios(self, other: str | None = None) -> list[float | None]:
        """tether / ``other`` (default: the peer) round by round."""
        other = other or self.peer
        if other is None:
            return []
        pairs = zip(self.series.get(self.tether, []), self.series.get(other, []), strict=False)
        return [a / b if a is not None and b else None for a, b in pairs]

    def ratio(self, other: str | None = None) -> float | None:
        """tether's median / ``other``'s median (default: the peer)."""
        medians = self.medians()
        a, b = medians.get(self.tether), medians.get(other or self.peer or "")
        return a / b if a is not None and b else None

    def as_dict(self) -> dict[str, Any]:
        medians = self.medians()
        spread = {
            label: [min(v for v in values if v is not None), max(v for v in values if v is not None)]
            if any(v is not None for v in values)
            else None
            for label, values in self.series.items()
        }
        return {
            "case": self.case,
            "metric": self.metric,
            "better": self.better,
            "series": self.series,
            "median": medians,
            "spread": spread,
            "tether": self.tether,
            "peer": self.peer,
            "limit": self.limit,
            "ratio_per_round": self.ratios(),
            "ratio": self.ratio(),
            "ratio_to_limit": self.ratio(self.limit) if self.limit else None,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def fmt(value: float | None, metric: str = "") -> str:
    """A number as the table shows it: thousands separators, 3 significant digits below 100."""
    if value is None:
        return "—"
    if metric.endswith("ms") or metric.startswith("ms"):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value >= 1 else f"{value:.2g}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}x" if value < 100 else f"{value:,.0f}x"


class Bench:
    """Collects one benchmark's rows and notes; prints its JSON line and table; returns its result dict."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.title = title
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.started = time.monotonic()

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            print(f"[{self.name}] note: {text}", file=sys.stderr, flush=True)

    def result(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "rows": [row.as_dict() for row in self.rows],
            "notes": self.notes,
        }

    def finish(self) -> dict[str, Any]:
        result = self.result()
        print(json.dumps(result, separators=(",", ":")), flush=True)
        print(render_table(result), flush=True)
        return result


def series_cell(row: dict[str, Any], label: str) -> str:
    values = [v for v in row["series"].get(label, []) if v is not None]
    if not values:
        return "skipped"
    mid = row["median"][label]
    if len(values) == 1:
        return fmt(mid, row["metric"])
    return f"{fmt(mid, row['metric'])} ({fmt(min(values), row['metric'])}-{fmt(max(values), row['metric'])})"


def render_table(result: dict[str, Any], markdown: bool = False) -> str:
    """The readable table of one benchmark: medians (min-max over rounds) and tether / peer per round."""
    header = ["case", "metric", "tether", "peer", "limit", "tether/peer per round", "tether/limit"]
    lines: list[list[str]] = []
    for row in result["rows"]:
        peer = f"{row['peer']}: {series_cell(row, row['peer'])}" if row["peer"] else "—"
        others = [label for label in row["series"] if label not in (row["tether"], row["peer"], row["limit"])]
        for label in others:
            peer += f"; {label}: {series_cell(row, label)}"
        limit = f"{row['limit']}: {series_cell(row, row['limit'])}" if row["limit"] else "—"
        per_round = ", ".join(fmt_ratio(r) for r in row["ratio_per_round"]) or "—"
        lines.append(
            [
                row["case"],
                row["metric"] + (" ↑" if row["better"] == "higher" else " ↓"),
                f"{row['tether']}: {series_cell(row, row['tether'])}",
                peer,
                limit,
                per_round,
                fmt_ratio(row["ratio_to_limit"]),
            ]
        )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) if lines else len(header[i]) for i in range(7)]
    text = [f"== {result['title']} ({result['elapsed_s']} s)"]
    text.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    text += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text += [f"note: {note}" for note in result["notes"]]
    return "\n".join(text)


@contextlib.contextmanager
def stopping(*things: Any) -> Iterator[None]:
    """Stop every started server, load generator or redis-server on the way out, whatever happened."""
    try:
        yield
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                thing.stop()
