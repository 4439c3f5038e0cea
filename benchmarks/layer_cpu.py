"""What a layer change costs in CPU: benchmarks 1 and 2's loops on tether's layers, at two checkouts, in one run.

Usage (the checkout to compare with in a worktree of its own)::

    git worktree add /tmp/tether-before f073eda
    .venv/bin/python benchmarks/layer_cpu.py --before /tmp/tether-before/src [--after /tmp/tether-after/src]

``make bench BENCH=layer`` and ``BENCH=fanout`` report wall-clock rates and latencies, which on a shared machine
swing by several times between rounds of the same code. This runs their own loops (``benchmarks.layer.measure``,
``benchmarks.fanout.Members``) for tether only and reports the process's CPU time instead: per message for send then
receive (1 and 50 senders, named and ``new_channel()`` channels), and per ``group_send`` to 100 and 1,000 members of
the process. Redis's own CPU is not counted (it is the same server for both). Each (checkout, backend) runs in a
fresh process that imports tether from that checkout, the checkouts alternate within each round, and the table shows
medians with the range over the rounds. Nothing here asserts: it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("inmemory", "redis", "pubsub")
GROUP_SIZES = (100, 1_000)
GROUP_SENDS = 20


async def measure(backend: str, url: str, prefix: str, seconds: float) -> dict[str, float]:
    """Every case for ``backend`` on the tether already imported (the child process's): case name to CPU cost."""
    from benchmarks.fanout import Members, _send_and_wait
    from benchmarks.layer import CASES, close_layer, make_layer
    from benchmarks.layer import measure as send_and_receive

    costs: dict[str, float] = {}
    for index, (kind, senders) in enumerate(CASES):
        layer = make_layer("tether", backend, url, f"{prefix}{index}:")
        channel = await layer.new_channel() if kind == "local" else "bench.named"
        try:
            started = time.process_time()
            result = await send_and_receive(layer, channel, senders, seconds)
            spent = time.process_time() - started
        finally:
            await close_layer(layer)
        # The loop's warm-up sends at least 10 messages that the result does not count; the CPU includes them.
        costs[f"{kind} channel, {senders} sender(s): µs/msg"] = spent / (result["received"] + 10) * 1e6
    for size in GROUP_SIZES:
        layer = make_layer("tether", backend, url, f"{prefix}g{size}:")
        members = Members(layer)
        try:
            await members.grow(size)
            if await _send_and_wait(layer, [members], 0) is None:  # warm-up: pub/sub subscriptions settle
                raise RuntimeError(f"a group_send to {size} did not reach every member")
            started = time.process_time()
            for seq in range(1, GROUP_SENDS + 1):
                if await _send_and_wait(layer, [members], seq) is None:
                    raise RuntimeError(f"a group_send to {size} did not reach every member")
            costs[f"group_send to {size:,}: ms/send"] = (time.process_time() - started) / GROUP_SENDS * 1e3
        finally:
            await members.stop()
            await close_layer(layer)
    return costs


def child(src: str, backend: str, url: str, prefix: str, seconds: float) -> None:
    sys.path.insert(0, src)
    import tether  # from the checkout measured, before this checkout's benchmarks package is put on the path

    if not str(Path(tether.__file__).resolve()).startswith(str(Path(src).resolve())):
        raise SystemExit(f"tether came from {tether.__file__}, not from {src}")
    sys.path.insert(1, str(ROOT))
    try:
        import uvloop

        runner = uvloop.run  # as benchmarks 1 and 2 run their workers
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(measure(backend, url, prefix, seconds))))


def run_child(src: str, backend: str, url: str, prefix: str, seconds: float) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", src, backend, url, prefix, str(seconds)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout
    costs: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="the src/ directory of the checkout to compare with (required)")
    parser.add_argument("--after", default=str(ROOT / "src"), help="the src/ directory measured against it (this one)")
    parser.add_argument("--redis-url", help="use this Redis (default: start redis-server on a free port)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="measuring window per send/receive case")
    parser.add_argument("--only", choices=BACKENDS, action="append", help="run only these layers (repeatable)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        src, backend, url, prefix, seconds = args.child
        child(src, backend, url, prefix, float(seconds))
        return
    if not args.before:
        parser.error("--before is required: the src/ directory of the checkout to compare with")
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import RedisServer, alternate

    trees = {"before": args.before, "after": args.after}
    backends = args.only or list(BACKENDS)
    prefix = f"bench-cpu-{secrets.token_hex(3)}"
    results: dict[tuple[str, str, str], list[float]] = {}

    def measure_tree(url: str, number: int, tree: str) -> None:
        for backend in backends:
            costs = run_child(trees[tree], backend, url, f"{prefix}.{number}.{tree}.{backend}.", args.seconds)
            for case, value in costs.items():
                results.setdefault((backend, case, tree), []).append(value)
            print(f"  round {number + 1}: {backend:8} {tree:6} done", flush=True)

    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(RedisServer()).url
        alternate(args.rounds, list(trees), lambda number, tree: measure_tree(url, number, tree))
    print(f"\nCPU time, medians of {args.rounds} rounds (range):")
    print(f"{'layer':9} {'case':40} {'before':>20} {'after':>20} {'after/before':>13}")
    for backend, case in dict.fromkeys((backend, case) for backend, case, _tree in results):
        before, after = results[(backend, case, "before")], results[(backend, case, "after")]
        cells = [f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for v in (before, after)]
        ratio = statistics.median(after) / statistics.median(before)
        print(f"{backend:9} {case:40} {cells[0]:>20} {cells[1]:>20} {ratio:13.2f}")


if __name__ == "__main__":
    main()
