"""One OpenTelemetry SDK set-up for the tracing tests: the global providers can be set once per process.

Spans go to an in-memory exporter through a simple (synchronous) processor, so a span is readable as soon as it
ends; the delivery-lag histogram to an in-memory metric reader. Root spans of a consumer class whose name starts with
``Unsampled`` are dropped by the sampler, as a ratio sampler drops most connections in production.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the 'otel' extra of django-tether is not installed")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult

_exporter = InMemorySpanExporter()
_reader = InMemoryMetricReader()


class _DropUnsampled(Sampler):
    """Drops the connection spans of ``Unsampled*`` consumers; samples every other root."""

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None, **rest: Any
    ) -> SamplingResult:
        if name.startswith("websocket Unsampled"):
            return SamplingResult(Decision.DROP)
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, **rest)

    def get_description(self) -> str:
        return "DropUnsampled"


_provider = TracerProvider(sampler=ParentBased(_DropUnsampled()))
_provider.add_span_processor(SimpleSpanProcessor(_exporter))
trace.set_tracer_provider(_provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The exporter of this process's spans, emptied before the test."""
    _exporter.clear()
    yield _exporter
    _exporter.clear()


@pytest.fixture
def lag_reader() -> InMemoryMetricReader:
    """The reader of the metrics that tether records through the OpenTelemetry API."""
    return _reader


def lag_counts(reader: InMemoryMetricReader) -> dict[str, int]:
    """The delivery-lag histogram's count per consumer (cumulative since the process started)."""
    counts: dict[str, int] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == "tether.delivery.lag":
                    points: Sequence[Any] = metric.data.data_points
                    for point in points:
                        counts[str(point.attributes["tether.consumer"])] = point.count
    return counts
