"""What ``TETHER_TRACING = True`` costs per message, in one process: tracing off, on with every connection sampled,
and on with none sampled, in the same run.

Usage::

    .venv/bin/python benchmarks/tracing_cost.py [--rounds 5]

The cases are the in-process ones of benchmarks/metrics.py (an echo consumer driven through its ASGI callables,
20,000 frames; a group_send to 1,000 in-memory members, each writing a frame), measured with OpenTelemetry's SDK set
up as in production: spans through a batch processor to an exporter that drops them, the delivery-lag histogram into
a meter provider with a reader. "unsampled" is the SDK's sampler saying no to every connection, as a ratio sampler
does to most; "sampled" records every span. The modes alternate within each round, so all meet the same machine
load; the best round is shown beside the median. It also times the one thing tracing adds with tracing off: the
consumer's check for the trace key, per message. Nothing here asserts: it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("off", "unsampled", "sampled")


def setup() -> None:
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
    import django
    from django.conf import settings
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class Switch(Sampler):
        """ALWAYS_ON or ALWAYS_OFF, as ``os.environ["BENCH_SAMPLED"]`` says at each root span."""

        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            chosen = ALWAYS_ON if os.environ.get("BENCH_SAMPLED") == "1" else ALWAYS_OFF
            return chosen.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return "Switch"

    provider = TracerProvider(sampler=Switch())
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    settings.configure(
        INSTALLED_APPS=["tether"],
        CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}},
        TETHER_TRACING=False,
    )
    django.setup()


def check_cost() -> float:
    """ns per message of ``TRACE_KEY in message`` on a message without it (what tracing costs while off)."""
    message = {"type": "websocket.receive", "text": "hello"}
    number = 2_000_000
    best = min(timeit.repeat("key in message", globals={"key": "_trace", "message": message}, number=number))
    empty = min(timeit.repeat("message", globals={"message": message}, number=number))
    return (best - empty) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setup()
    from django.test import override_settings

    from benchmarks.metrics import consumer_class, echo, group_send

    echo_class = consumer_class()
    group_class = type("GroupEcho", (echo_class,), {"groups": ["bench"]})
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for mode in MODES:
            os.environ["BENCH_SAMPLED"] = "1" if mode == "sampled" else "0"
            with override_settings(TETHER_TRACING=mode != "off"):
                results.setdefault(("echo", mode), []).append(asyncio.run(echo(echo_class.as_asgi())))
                results.setdefault(("group_send", mode), []).append(asyncio.run(group_send(group_class.as_asgi())))
    header = "".join(f"{mode:>22}" for mode in MODES)
    print(f"{'case':<12} {'':>8}{header}   ({args.rounds} rounds; overhead against off)")
    for case, unit in (("echo", "µs/frame"), ("group_send", "µs/send")):
        for name, pick in (("best", min), ("median", statistics.median)):
            off = pick(results[(case, "off")])
            cells = []
            for mode in MODES:
                value = pick(results[(case, mode)])
                cells.append(
                    f"{value:>10.2f} {unit:<5}" + ("       " if mode == "off" else f" {(value / off - 1) * 100:+5.0f}%")
                )
            print(f"{case:<12} {name:>8}" + "".join(f"{cell:>22}" for cell in cells))
    print(f"tracing off: the trace-key check costs {check_cost():.1f} ns per message")


if __name__ == "__main__":
    main()
