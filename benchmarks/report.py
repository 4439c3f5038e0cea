"""Turning results into what people read: the machine and versions, the targets met or not, ``docs/benchmarks.md``
and one PNG chart per benchmark.

``benchmarks/results/latest.json`` holds the last result of every benchmark; running one benchmark replaces only its
own entry, so the page always shows a complete set (each entry says when it ran).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, fmt, fmt_ratio, median, render_table

__all__ = ["draw_charts", "evaluate_targets", "load_results", "machine", "save_results", "write_docs"]

RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
DOCS = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
ORDER = (
    "layer", "fanout", "echo", "broadcast", "idle", "capacity", "churn", "worker", "cluster", "fanout_processes",
    "streams", "presence", "metrics",
)  # fmt: skip
PACKAGES = (
    "django-tether", "channels", "channels-redis", "daphne", "uvicorn", "granian", "websockets", "redis", "hiredis",
    "Django", "asgiref", "uvloop", "httptools", "Twisted", "msgpack",
)  # fmt: skip


# Machine and versions ------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() or None


def machine(redis_version: str | None = None) -> dict[str, Any]:
    """Where and with what this run happened."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["python"] = platform.python_version()
    if redis_version:
        versions["redis-server"] = redis_version
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "git_commit": _git_commit(),
        "versions": versions,
    }


# Results file --------------------------------------------------------------------------------------------------------


def load_results() -> dict[str, Any]:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"benchmarks": {}}


def save_results(results: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")


# Targets -------------------------------------------------------------------------------------------------------------


def _row(results: dict[str, Any], bench: str, case: str, metric: str) -> dict[str, Any] | None:
    for row in results["benchmarks"].get(bench, {}).get("rows", []):
        if row["case"] == case and row["metric"] == metric:
            return row
    return None


def _med(row: dict[str, Any] | None, label: str) -> float | None:
    if row is None:
        return None
    return median(row["series"].get(label, []))


def _verdict(checks: list[bool | None]) -> bool | None:
    if any(check is None for check in checks):
        return None
    return all(checks)


def _speedup(results: dict[str, Any], bench: str, case: str, metric: str, peer: str, tether: str = "tether") -> Any:
    """peer / tether for a lower-is-better metric: how many times faster tether is."""
    row = _row(results, bench, case, metric)
    a, b = _med(row, tether), _med(row, peer)
    return b / a if a and b else None


def _ratio(results: dict[str, Any], bench: str, case: str, metric: str, other: str, tether: str = "tether") -> Any:
    row = _row(results, bench, case, metric)
    a, b = _med(row, tether), _med(row, other)
    return a / b if a is not None and b else None


def _flat(counts: dict[int, float | None]) -> bool | None:
    """Whether a count per group size stays flat: the largest within 1.25x the smallest, plus one."""
    present = [value for value in counts.values() if value is not None]
    return None if len(present) < 2 else max(present) <= 1.25 * min(present) + 1


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 6, with what was measured (medians of the rounds, in this run) and met / not met."""
    targets: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        targets.append({"target": target, "measured": measured, "met": met})

    # In-memory layer.
    speed = _speedup(results, "fanout", "in-memory, 1,000 members, 1 process", "p50 ms", "channels")
    add("In-memory group_send to 1,000: p50 at least 50x faster than Channels", f"{fmt_ratio(speed)} faster",
        _at_least(speed, 50))  # fmt: skip
    ratios = {
        f"{s}, {k}": _ratio(results, "layer", f"in-memory, {s}, {k} channel", "msgs/s", "channels")
        for s in ("1 sender", "50 senders")
        for k in ("named", "local")
    }
    add("In-memory send/receive at least 1.5x Channels", "; ".join(f"{k}: {fmt_ratio(v)}" for k, v in ratios.items()),
        _verdict([_at_least(v, 1.5) for v in ratios.values()]))  # fmt: skip

    # Redis layer: send/receive.
    for kind in ("named", "local"):
        case = f"Redis, 1 sender, {kind} channel"
        raw = _ratio(results, "layer", case, "msgs/s", "redis-py")
        peer = _ratio(results, "layer", case, "msgs/s", "channels")
        add(f"Redis send/receive, 1 sender, {kind} channel: >= 80% of the raw redis-py loop and 4x channels_redis",
            f"{fmt_ratio(raw)} of raw; {fmt_ratio(peer)} channels_redis",
            _verdict([_at_least(raw, 0.8), _at_least(peer, 4)]))  # fmt: skip
    for kind in ("named", "local"):
        peer = _ratio(results, "layer", f"Redis, 50 senders, {kind} channel", "msgs/s", "channels")
        add(f"Redis send/receive, 50 senders, {kind} channel: at least 10x channels_redis", f"{fmt_ratio(peer)}",
            _at_least(peer, 10))  # fmt: skip

    # Redis layer: group_send.
    case = "Redis, 1,000 members, 1 process"
    to_peer = _ratio(results, "fanout", case, "p50 ms", "channels")
    tether_p50 = _med(_row(results, "fanout", case, "p50 ms"), "tether")
    pubsub_p50 = _med(_row(results, "fanout", "Redis pub/sub, 1,000 members, 1 process", "p50 ms"), "channels")
    below_pubsub = None if tether_p50 is None or pubsub_p50 is None else tether_p50 < pubsub_p50
    add("Redis group_send to 1,000 in one process: p50 at most 1/10 of channels_redis and below its pub/sub layer",
        f"tether {fmt(tether_p50, 'ms')} ms = {fmt_ratio(to_peer)} of channels_redis; channels pub/sub "
        f"{fmt(pubsub_p50, 'ms')} ms", _verdict([_at_most(to_peer, 0.1), below_pubsub]))  # fmt: skip
    for processes in ("1 process", "2 processes"):
        counts = {
            size: _med(
                _row(results, "fanout", f"Redis, {size:,} members, {processes}", "Redis cmds/group_send"), "tether"
            )
            for size in (10, 100, 1_000, 10_000)
        }
        add(f"Redis commands per group_send flat in members ({processes})",
            ", ".join(f"{size:,}: {fmt(value)}" for size, value in counts.items()), _flat(counts))  # fmt: skip
    # Fan-out across processes (issue 15 item 4): a sender and 4 member processes.
    counts = {
        size: _med(
            _row(results, "fanout_processes", f"{size:,} members, 4 processes", "Redis cmds/group_send"), "tether"
        )
        for size in (100, 1_000, 10_000)
    }
    add("Redis commands per group_send flat in members (sender + 4 member processes)",
        ", ".join(f"{size:,}: {fmt(value)}" for size, value in counts.items()), _flat(counts))  # fmt: skip

    # WebSocket echo.
    for clients in ("1 client", "50 clients"):
        row = _row(results, "echo", clients, "msgs/s")
        to_bare = _ratio(results, "echo", clients, "msgs/s", "bare/uvicorn", tether="tether/uvicorn")
        to_peer = _ratio(results, "echo", clients, "msgs/s", "channels/uvicorn", tether="tether/uvicorn")
        add(f"WebSocket echo, {clients}: at least 90% of the bare ASGI app and ahead of Channels on uvicorn",
            f"{fmt_ratio(to_bare)} of bare; {fmt_ratio(to_peer)} Channels/uvicorn" if row else "not measured",
            _verdict([_at_least(to_bare, 0.9), _at_least(to_peer, 1.0000001)]))  # fmt: skip

    # Echo on granian (issue 15 item 3): tether at or above 0.9x of the bare ASGI app on the same server, as the row
    # above holds it on uvicorn.
    for clients in ("1 client", "50 clients"):
        ratio = _ratio(results, "echo", f"{clients}, granian", "msgs/s", "bare/granian", tether="tether/granian")
        add(f"WebSocket echo on granian, {clients}: at least 0.9x the bare ASGI app on granian",
            f"{fmt_ratio(ratio)} of bare/granian", _at_least(ratio, 0.9))  # fmt: skip

    # Broadcast.
    speed = _speedup(results, "broadcast", "1,000 clients, 1 server process", "p50 ms", "channels/redis",
                     tether="tether/redis")  # fmt: skip
    add("Broadcast to 1,000 clients (1 uvicorn process, Redis layer): p50 at least 3x faster than channels_redis",
        f"{fmt_ratio(speed)} faster", _at_least(speed, 3))  # fmt: skip

    # Idle memory and churn.
    for count in ("1,000", "10,000"):
        for layer, label in (("no layer", "no layer"), ("Redis layer", "redis")):
            ratio = _ratio(results, "idle", f"{count} idle connections, {layer}", "KiB/connection",
                           f"channels/{label}", tether=f"tether/{label}")  # fmt: skip
            row = _row(results, "idle", f"{count} idle connections, {layer}", "KiB/connection")
            add(f"Memory per idle connection at {count}, {layer}: no more than Channels on uvicorn",
                f"tether {fmt(_med(row, f'tether/{label}'))} KiB, Channels {fmt(_med(row, f'channels/{label}'))} KiB "
                f"({fmt_ratio(ratio)})", _at_most(ratio, 1.0))  # fmt: skip
    # Smaller connections (issue 15 item 1).
    ratio = _ratio(results, "idle", "10,000 idle connections, Redis layer", "KiB/connection", "bare",
                   tether="tether/redis")  # fmt: skip
    add("Memory per idle connection at 10,000, Redis layer: at most 1.1x the bare ASGI app, same run",
        f"{fmt_ratio(ratio)} of bare", _at_most(ratio, 1.1))  # fmt: skip
    tuned = _med(_row(results, "idle", "10,000 idle connections, Redis layer", "KiB/connection"),
                 "tether/redis, tuned server")  # fmt: skip
    add("Memory per idle connection at 10,000, Redis layer, the documented production command: at most 16 KiB",
        f"{fmt(tuned)} KiB", _at_most(tuned, 16))  # fmt: skip
    for layer, label in (("in-memory", "in-memory"), ("redis", "redis")):
        case = f"10,000 cycles, {layer} layer"
        growth = _med(_row(results, "churn", case, "RSS growth MB (all cycles)"), f"tether/{label}")
        leftover = _med(_row(results, "churn", case, "leftover layer state (after)"), f"tether/{label}")
        add(f"Churn, {layer} layer: RSS growth under 5 MB and no leftover layer state",
            f"{fmt(growth)} MB; {fmt(leftover)} left over",
            _verdict([_at_most(growth, 4.999), _at_most(leftover, 0)]))  # fmt: skip

    # Workers (issue 17).
    rows = results["benchmarks"].get("worker", {}).get("rows", [])
    rate = next((row for row in rows if row["metric"] == "jobs/s"), None)
    ratio = _ratio(results, "worker", rate["case"], "jobs/s", "default", tether="durable") if rate else None
    add("Worker throughput on a durable channel: at least 0.5x the default channel's, same run",
        f"{fmt_ratio(ratio)}", _at_least(ratio, 0.5))  # fmt: skip
    lost = next((row for row in rows if row["metric"] == "jobs lost"), None)
    durable_lost = max((v for v in lost["series"].get("durable", []) if v is not None), default=None) if lost else None
    add("Durable channel: no job lost when a worker is SIGKILLed mid-stream (every run)",
        f"{fmt(durable_lost)} lost at most", _at_most(durable_lost, 0))  # fmt: skip

    # Redis Cluster (issue 15 item 5): per-master batching keeps a 3-master cluster on one machine near one server.
    rates = {
        kind: _ratio(results, "cluster", f"Redis, 50 senders, {kind} channel", "msgs/s", "single", tether="cluster")
        for kind in ("named", "local")
    }
    add("Redis Cluster (3 masters, same machine), 50 senders: at least 0.7x a single Redis, same run",
        "; ".join(f"{kind}: {fmt_ratio(value)}" for kind, value in rates.items()),
        _verdict([_at_least(value, 0.7) for value in rates.values()]))  # fmt: skip
    slower = _ratio(results, "cluster", "Redis group_send, 1,000 members, 1 process", "p50 ms", "single",
                    tether="cluster")  # fmt: skip
    add("Redis Cluster group_send to 1,000 in one process: p50 at most 1.5x a single Redis, same run",
        f"{fmt_ratio(slower)} of single", _at_most(slower, 1.5))  # fmt: skip

    # Streams (issue 13): publishing to a stream costs about a group_send; recovery of 1,000 is quick.
    for layer in ("in-memory", "Redis", "Redis pub/sub"):
        case = f"{layer}, 1,000 members, 1 process"
        wall = _ratio(results, "streams", case, "p50 ms", "group_send", tether="publish")
        cpu = _ratio(results, "streams", case, "CPU ms/send", "group_send", tether="publish")
        add(f"Stream publish to 1,000 members, {layer}: at most 1.3x a plain group_send (p50), same run",
            f"p50 {fmt_ratio(wall)}, CPU {fmt_ratio(cpu)} of group_send", _at_most(wall, 1.3))  # fmt: skip
        recover = _med(_row(results, "streams", f"{layer}, recover 1,000 missed", "recover p50 ms"), "recover")
        add(f"Recovery of 1,000 missed messages, {layer}: p50 under 20 ms", f"{fmt(recover, 'ms')} ms",
            _at_most(recover, 19.999))  # fmt: skip
    # Presence (issue 13): a heartbeat's Redis commands do not grow with the members.
    heartbeat = _row(results, "presence", "2 processes, 1,000 members each", "Redis cmds/heartbeat")
    few, many = _med(heartbeat, "1 member each"), _med(heartbeat, "1,000 members each")
    flat = None if few is None or many is None else few == many
    add("Presence: Redis commands per heartbeat flat in members (1 and 1,000 per process, 2 processes)",
        f"1 member: {fmt(few)}; 1,000 members: {fmt(many)}", flat)  # fmt: skip

    # Metrics (issue 14): the server CPU that metrics on costs over metrics off, in the same run.
    cost = {
        "echo, 1 client": "server CPU µs/msg",
        "echo, 50 clients": "server CPU µs/msg",
        "group_send to 1,000 members, in-memory layer": "server CPU ms/group_send",
        "group_send to 1,000 members, Redis layer": "server CPU ms/group_send",
    }
    ratios = {
        case: _ratio(results, "metrics", case, metric, "metrics off", tether="metrics on")
        for case, metric in cost.items()
    }
    add("Metrics on: echo (1 and 50 clients) and group_send to 1,000 (in-memory, Redis) cost at most 1.05x the "
        "server CPU of metrics off, same run", "; ".join(f"{case}: {fmt_ratio(v)}" for case, v in ratios.items()),
        _verdict([_at_most(v, 1.05) for v in ratios.values()]))  # fmt: skip
    return targets


def render_targets(targets: list[dict[str, Any]], markdown: bool = False) -> str:
    marks = {True: "met", False: "NOT MET", None: "not measured"}
    if markdown:
        lines = ["| target | measured (medians, this run) | verdict |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['measured']} | **{marks[t['met']]}** |" for t in targets]
        return "\n".join(lines)
    width = max(len(t["target"]) for t in targets)
    return "\n".join(f"{marks[t['met']]:>12}  {t['target'].ljust(width)}  {t['measured']}" for t in targets)


# Charts --------------------------------------------------------------------------------------------------------------

CHARTS: dict[str, tuple[str, ...]] = {
    "layer": ("msgs/s", "Redis cmds/msg"),
    "fanout": ("p50 ms", "Redis cmds/group_send"),
    "echo": ("msgs/s", "RTT p50 ms"),
    "broadcast": ("p50 ms",),
    "idle": ("KiB/connection",),
    "capacity": (
        "KiB/connection",
        "KiB/connection after broadcasts",
        "s to connect all",
        "s until all have the broadcast",
    ),
    "churn": ("ms/cycle (wall, 10 clients)", "RSS growth MB (all cycles)"),
    "worker": ("jobs/s", "jobs lost", "jobs duplicates"),
    "cluster": ("msgs/s", "p50 ms"),
    "fanout_processes": ("p50 ms", "Redis cmds/group_send", "CPU ms/group_send (sender + members)"),
    "streams": ("p50 ms", "CPU ms/send", "recover p50 ms"),
    "metrics": ("server CPU µs/msg", "server CPU ms/group_send", "CPU µs/frame", "CPU µs/member"),
    "presence": ("join µs/member", "Redis cmds/heartbeat"),
}


def draw_charts(results: dict[str, Any], only: list[str] | None = None) -> list[Path]:
    """One PNG per benchmark in ``docs/images/bench-<name>.png``: medians with min-max bars, per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMAGES.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ORDER:
        result = results["benchmarks"].get(name)
        if result is None or (only and name not in only):
            continue
        metrics = CHARTS[name]
        figure, axes = plt.subplots(len(metrics), 1, figsize=(13, 4.2 * len(metrics)), squeeze=False)
        for axis, metric in zip(axes[:, 0], metrics, strict=True):
            rows = [row for row in result["rows"] if row["metric"] == metric]
            labels = list(dict.fromkeys(label for row in rows for label in row["series"]))
            width = 0.8 / max(1, len(labels))
            values_all = []
            for index, label in enumerate(labels):
                mids, lows, highs, xs = [], [], [], []
                for position, row in enumerate(rows):
                    values = [v for v in row["series"].get(label, []) if v is not None]
                    if not values:
                        continue
                    mid = median(values)
                    xs.append(position + (index - (len(labels) - 1) / 2) * width)
                    mids.append(mid)
                    lows.append(mid - min(values))
                    highs.append(max(values) - mid)
                    values_all += values
                axis.bar(xs, mids, width, yerr=[lows, highs], capsize=2, label=label)
            axis.set_xticks(range(len(rows)))
            axis.set_xticklabels([row["case"] for row in rows], rotation=30, ha="right", fontsize=7)
            positive = [v for v in values_all if v and v > 0]
            if positive and max(positive) / min(positive) > 50:
                axis.set_yscale("log")
            better = rows[0]["better"] if rows else "lower"
            axis.set_ylabel(f"{metric} ({better} is better)")
            axis.legend(fontsize=7, ncols=min(4, max(1, len(labels))))
            axis.grid(axis="y", alpha=0.3)
        figure.suptitle(f"{result['title']} — medians of the rounds, bars show min-max", fontsize=10)
        figure.tight_layout()
        path = IMAGES / f"bench-{name}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    return written


# The docs page -------------------------------------------------------------------------------------------------------


def _meta_lines(meta: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items() if version)
    return [
        f"- Run: {meta['date']}, commit `{meta.get('git_commit')}`, `{meta.get('command', 'make bench')}`, "
        f"{meta.get('rounds', 3)} rounds, total {meta.get('total_s', '?')} s",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB, {meta['os']}",
        f"- Versions: {versions}",
    ]


def write_docs(results: dict[str, Any]) -> None:
    """Replace the generated part of ``docs/benchmarks.md`` (between its markers) with this run's tables."""
    lines = [START, "", "## Results of the last run", ""]
    lines += _meta_lines(results["meta"])
    lines += ["", "### Targets", "", render_targets(results["targets"], markdown=True), ""]
    for name in ORDER:
        result = results["benchmarks"].get(name)
        if result is None:
            continue
        lines += [f"### {result['title']}", ""]
        if result.get("ran_at"):
            lines += [f"Ran {result['ran_at']} in {result['elapsed_s']} s.", ""]
        lines += [render_table(result, markdown=True), ""]
        lines += [f"- {note}" for note in result["notes"]]
        lines += ["", f"![{result['title']}](images/bench-{name}.png)", ""]
    lines.append(END)
    generated = "\n".join(lines)
    text = DOCS.read_text() if DOCS.exists() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + generated + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    DOCS.write_text(text)
