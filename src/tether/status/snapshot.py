"""What one process reports about itself, and how the reports of several processes add up: the sans-I/O half of
``tether.status``.

A snapshot is plain JSON-able data (it travels through the channel layer): the process's open connections and
message counts per consumer class, its message rates since its previous snapshot, its drops by reason, each layer's
health and its largest groups as far as the layer knows them, and its recent loop lag. ``aggregate`` combines the
latest snapshot of each process into the summary the admin page and ``manage.py tether_status`` show; ``render_text``
writes that summary for a terminal.

Nothing here grows with traffic: a snapshot holds one entry per consumer class, per drop reason, per layer alias and
at most ``TOP_GROUPS`` groups.
"""

from __future__ import annotations

import heapq
from typing import Any

from tether.metrics.tally import DROP_REASONS, RECEIVED_KINDS, Tally

__all__ = ["TOP_GROUPS", "aggregate", "consumer_counts", "drop_counts", "render_text", "top_groups"]

#: How many of its largest groups a process reports, and the summary shows.
TOP_GROUPS = 10

Snapshot = dict[str, Any]


def consumer_counts(tally: Tally) -> dict[str, dict[str, int]]:
    """Consumer class -> ``open`` connections, messages ``in`` (handled) and ``out`` (frames sent) so far."""
    counts: dict[str, dict[str, int]] = {}
    for name, consumer in list(tally.consumers.items()):
        kinds = list(consumer.handlers.items())
        handled = sum(histogram.handled for kind, histogram in kinds if kind in RECEIVED_KINDS)
        counts[name] = {"open": consumer.open, "in": handled, "out": consumer.sent_text + consumer.sent_binary}
    return counts


def drop_counts(layer_stats: dict[str, dict[str, int]], refusals: dict[str, int]) -> dict[str, int]:
    """Reason -> messages not delivered so far: the layers' ``stats()`` drops under metrics' reason names, and the
    rate limiter's refusals as ``rate_limited`` (its store failures are not drops and are left out)."""
    drops: dict[str, int] = {}
    for stats in layer_stats.values():
        for key, reason in DROP_REASONS.items():
            count = stats.get(key, 0)
            if count:
                drops[reason] = drops.get(reason, 0) + count
    limited = sum(count for name, count in refusals.items() if name != "store_errors")
    if limited:
        drops["rate_limited"] = limited
    return drops


def top_groups(sizes: dict[str, int], limit: int = TOP_GROUPS) -> list[list[Any]]:
    """The ``limit`` largest groups of ``sizes`` as ``[name, size]``, largest first (ties by name)."""
    largest = heapq.nsmallest(limit, sizes.items(), key=lambda item: (-item[1], item[0]))
    return [[name, size] for name, size in largest]


def rates(current: dict[str, dict[str, int]], previous: dict[str, dict[str, int]], seconds: float) -> dict[str, Any]:
    """Consumer class -> messages ``in`` and ``out`` per second between two ``consumer_counts``."""
    result: dict[str, Any] = {}
    if seconds <= 0:
        return result
    for name, counts in current.items():
        before = previous.get(name, {})
        result[name] = {key: round(max(0, counts[key] - before.get(key, 0)) / seconds, 2) for key in ("in", "out")}
    return result


def aggregate(snapshots: list[Snapshot]) -> dict[str, Any]:
    """The summary of the latest snapshot of each process: the processes (sorted by name), and totals per consumer
    class, per drop reason, and per group (the sum of each process's count, so a group is as large as every
    process that reported it says; a process reporting only its top groups may leave some members out)."""
    processes = sorted(snapshots, key=lambda snapshot: str(snapshot.get("process", "")))
    consumers: dict[str, dict[str, float]] = {}
    drops: dict[str, int] = {}
    groups: dict[str, int] = {}
    for snapshot in processes:
        for name, counts in snapshot.get("consumers", {}).items():
            total = consumers.setdefault(name, {"open": 0, "in": 0, "out": 0, "in_rate": 0.0, "out_rate": 0.0})
            for key in ("open", "in", "out"):
                total[key] += counts.get(key, 0)
            rate = snapshot.get("rates", {}).get(name, {})
            total["in_rate"] = round(total["in_rate"] + rate.get("in", 0.0), 2)
            total["out_rate"] = round(total["out_rate"] + rate.get("out", 0.0), 2)
        for reason, count in snapshot.get("drops", {}).items():
            drops[reason] = drops.get(reason, 0) + count
        for name, size in snapshot.get("groups", []):
            groups[name] = groups.get(name, 0) + size
    return {
        "processes": processes,
        "totals": {
            "processes": len(processes),
            "open": sum(int(counts["open"]) for counts in consumers.values()),
            "consumers": dict(sorted(consumers.items())),
            "drops": dict(sorted(drops.items())),
            "groups": top_groups(groups),
        },
    }


def render_text(summary: dict[str, Any]) -> str:
    """``summary`` (from ``aggregate``) as lines for a terminal: the totals, then each process."""
    totals = summary["totals"]
    lines = [f"Processes: {totals['processes']}    open connections: {totals['open']}", ""]
    lines.append("Consumers (all processes):")
    if not totals["consumers"]:
        lines.append("  (none yet)")
    for name, counts in totals["consumers"].items():
        lines.append(
            f"  {name:<32} open {int(counts['open']):>6}   in {counts['in_rate']:>8.1f}/s   "
            f"out {counts['out_rate']:>8.1f}/s   (in {int(counts['in'])}, out {int(counts['out'])} so far)"
        )
    lines.append("Drops (all processes): " + _pairs(totals["drops"]))
    lines.append("Largest groups: " + (", ".join(f"{name} {size}" for name, size in totals["groups"]) or "none known"))
    for snapshot in summary["processes"]:
        lines.append("")
        lines.append(
            f"Process {snapshot.get('process')}: open {snapshot.get('open', 0)}, "
            f"loop lag {snapshot.get('loop_lag', 0.0) * 1000:.1f} ms"
        )
        for name, counts in snapshot.get("consumers", {}).items():
            rate = snapshot.get("rates", {}).get(name, {})
            lines.append(
                f"  {name:<32} open {counts.get('open', 0):>6}   in {rate.get('in', 0.0):>8.1f}/s   "
                f"out {rate.get('out', 0.0):>8.1f}/s"
            )
        for alias, health in snapshot.get("layers", {}).items():
            state = f"ok, {health['seconds'] * 1000:.1f} ms" if health.get("ok") else f"FAILING: {health.get('error')}"
            lines.append(f"  layer {alias}: {state}")
        lines.append("  drops: " + _pairs(snapshot.get("drops", {})))
    return "\n".join(lines) + "\n"


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in counts.items()) or "none"
