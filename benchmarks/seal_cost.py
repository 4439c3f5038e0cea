"""What sealed frames cost: tether's Redis layer without and with encryption, at two checkouts, in one run.

Usage (the checkout before sealed frames in a worktree of its own)::

    git worktree add /tmp/tether-before 004f4b7
    .venv/bin/python benchmarks/seal_cost.py --before /tmp/tether-before/src

The cases of ``bench_layer.py`` that encryption touches, for ``RedisChannelLayer``: send then receive with one sender
on a ``new_channel()`` channel and on a named channel (messages per second), and ``group_send`` to 1,000 members of
one process (p50 ms until all have it). Those go through Redis and share the machine with whatever else runs, so two
cases measure the CPU a process spends without Redis in the loop (best of 7 repeats): ``route`` encodes a message
for a local channel, frames it, routes the frame as the inbox reader does and takes the message out (µs per message);
``fanout`` routes a group frame naming its member list by token to 1,000 local members and takes their messages
out (ms per frame). Each measurement runs in a fresh process that imports tether from the checkout measured, the
checkouts alternate within each round, and the table shows medians over the rounds, so both meet the same machine
load. Nothing here asserts: it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASES = ("local", "named", "group", "route", "fanout")
UNITS = {"local": "msg/s", "named": "msg/s", "group": "p50 ms", "route": "µs/msg", "fanout": "ms/frame"}
KEYS = {"plain": None, "encrypted": ["bench-seal-key"]}


async def measure(url: str, prefix: str, keys: list[str] | None, case: str, seconds: float) -> float:
    """One case on the tether already imported (the child process's)."""
    from benchmarks.bench_layer import built, group_p50_ms, layer_throughput
    from tether.layers.redis import RedisChannelLayer

    def factory(name: str) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[url], prefix=name, symmetric_encryption_keys=keys)

    async with built(factory, prefix) as layer:
        if case == "group":
            return await group_p50_ms(layer, 1000, 15)
        if case == "route":
            return await route_us(layer)
        if case == "fanout":
            return await fanout_ms(layer, 1000)
        return await layer_throughput(layer, case, 1, seconds)


def encode(layer: Any, message: dict[str, Any], kind: str, name: str) -> bytes:
    """``layer.codec.encode`` at either checkout (before sealed frames it takes no destination)."""
    try:
        data: bytes = layer.codec.encode(message, kind, name)
    except TypeError:
        data = layer.codec.encode(message)
    return data


def best_of(repeats: int, number: int, work: Any) -> float:
    """The fastest of ``repeats`` runs of ``work()`` ``number`` times, in seconds per call."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(number):
            work()
        best = min(best, (time.perf_counter() - started) / number)
    return best


async def route_us(layer: Any) -> float:
    from benchmarks.bench_layer import MESSAGE
    from tether.layers.redis.storage import now_ms, pack_frame

    channel = await layer.new_channel()

    def one() -> None:
        frame = pack_frame(now_ms() + 60_000, encode(layer, MESSAGE, "c", channel), "", channel)
        layer._route(frame, None)
        layer._local.take(channel)

    return best_of(7, 2000, one) * 1e6


async def fanout_ms(layer: Any, members: int) -> float:
    from benchmarks.bench_layer import MESSAGE
    from tether.layers.redis.storage import now_ms, pack_frame

    group = "bench-fanout"
    channels = [await layer.new_channel() for _ in range(members)]
    entries = []
    for channel in channels:
        await layer.group_add(group, channel)
        entry = getattr(layer.codec, "member_entry", None)
        entries.append(entry(group, channel) if entry is not None else channel)
    payload = encode(layer, MESSAGE, "g", group)
    listed = pack_frame(now_ms() + 60_000, payload, group, "#t1:" + ",".join(entries))
    layer._member_lists.resolve(layer._parse(listed, None))
    frame = pack_frame(now_ms() + 60_000, payload, group, "#t1")

    def one() -> None:
        parsed = layer._parse(frame, None)
        layer._deliver_frame(parsed, None, layer._member_lists.resolve(parsed))
        for channel in channels:
            layer._local.take(channel)

    return best_of(7, 20, one) * 1e3


def child(src: str, url: str, prefix: str, mode: str, case: str, seconds: float) -> None:
    sys.path.insert(0, src)
    import tether  # from the checkout measured, before benchmarks.bench_layer puts this one first

    if not str(Path(tether.__file__).resolve()).startswith(str(Path(src).resolve())):
        raise SystemExit(f"tether came from {tether.__file__}, not from {src}")
    sys.path.insert(1, str(ROOT))
    print(json.dumps(asyncio.run(measure(url, prefix, KEYS[mode], case, seconds))))


def run_child(src: str, url: str, prefix: str, mode: str, case: str, seconds: float) -> float:
    command = [sys.executable, __file__, "--child", src, url, prefix, mode, case, str(seconds)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout
    value: float = json.loads(output.strip().splitlines()[-1])
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="the src/ directory of the checkout to compare with (required)")
    parser.add_argument("--redis-url", help="use this Redis (default: start redis-server on a free port)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring window per throughput case")
    parser.add_argument("--only", choices=CASES, action="append", help="run only these cases (repeatable)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        src, url, prefix, mode, case, seconds = args.child
        child(src, url, prefix, mode, case, float(seconds))
        return
    if not args.before:
        parser.error("--before is required: the src/ directory of the checkout to compare with")
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import RedisServer

    trees = {"before": args.before, "after": str(ROOT / "src")}
    prefix = f"bench-seal-{secrets.token_hex(3)}"
    results: dict[tuple[str, str, str], list[float]] = {}

    def rounds(url: str) -> None:
        for number in range(args.rounds):
            order = list(trees) if number % 2 == 0 else list(reversed(trees))
            for case in args.only or CASES:
                for mode in KEYS:
                    for tree in order:
                        value = run_child(trees[tree], url, prefix, mode, case, args.seconds)
                        results.setdefault((case, mode, tree), []).append(value)
                        print(f"  round {number + 1}: {case:6} {mode:9} {tree:6} {value:10,.2f}", flush=True)

    if args.redis_url:
        rounds(args.redis_url)
    else:
        with RedisServer() as server:
            rounds(server.url)
    print(f"\nMedians of {args.rounds} rounds:")
    print(f"{'case':8} {'unit':9} {'mode':10} {'before':>12} {'after':>12} {'after/before':>13}")
    for case in args.only or CASES:
        for mode in KEYS:
            before = statistics.median(results[(case, mode, "before")])
            after = statistics.median(results[(case, mode, "after")])
            print(f"{case:8} {UNITS[case]:9} {mode:10} {before:12,.2f} {after:12,.2f} {after / before:13.2f}")


if __name__ == "__main__":
    main()
