"""``python -m benchmarks [--only echo,churn]``: run the benchmarks, save the results, refresh the docs and charts.

``make bench`` runs this in ``.venv-bench``; ``make bench BENCH=echo`` passes ``--only echo``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import time
from typing import Any

from benchmarks.common import RedisServer, raise_fd_limit
from benchmarks.report import (
    ORDER,
    draw_charts,
    evaluate_targets,
    load_results,
    machine,
    render_targets,
    save_results,
    write_docs,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(ORDER)}")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, tether and its peer alternating (default 3)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply durations and repeats (default 1)")
    parser.add_argument("--no-report", action="store_true", help="do not touch latest.json, the docs or the charts")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(ORDER)
    unknown = [name for name in chosen if name not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(ORDER)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    raise_fd_limit()
    with RedisServer() as probe:
        redis_version = probe.version()
    meta = machine(redis_version)
    print(f"tether benchmarks: {meta['date']}, {meta['cpu']}, {meta['cores']} cores", flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v), flush=True)

    started = time.monotonic()
    fresh: dict[str, Any] = {}
    for name in chosen:
        print(f"\n--- {name} ---", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        result = module.run(rounds=args.rounds, scale=args.scale)
        result["ran_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        fresh[name] = result
    total = round(time.monotonic() - started, 1)

    results = load_results()
    results["benchmarks"] = {**results.get("benchmarks", {}), **fresh}
    command = "make bench" + (f" BENCH={args.only}" if args.only else "")
    if args.rounds != 3 or args.scale != 1.0:  # not what make bench runs: say what ran
        only = f" --only {args.only}" if args.only else ""
        command = f"python -m benchmarks{only} --rounds {args.rounds} --scale {args.scale:g}"
    meta.update(command=command, rounds=args.rounds, total_s=total, ran=chosen)
    results["meta"] = meta
    results["targets"] = evaluate_targets(results)
    print("\n--- targets ---")
    print(render_targets(results["targets"]))
    if not args.no_report:
        save_results(results)
        write_docs(results)
        charts = draw_charts(results, only=chosen)
        print(f"\nwrote benchmarks/results/latest.json, docs/benchmarks.md and {len(charts)} chart(s)")
    print(f"total: {total} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
