"""Every layer carries the trace entry: on the in-memory layer, the Redis layer and the Redis pub/sub layer, a traced
``send`` and ``group_send`` arrive with the ``_trace`` entry that names their PRODUCER span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.layers.conftest import LAYER_FACTORIES
from tether import tracing
from tether.tracing.otel import Tracing, _parse

WAIT = 10.0


@pytest.fixture
def tracer() -> Iterator[Tracing]:
    with override_settings(TETHER_TRACING=True):
        assert tracing.tracer is not None
        yield tracing.tracer


@pytest.mark.parametrize("backend", sorted(LAYER_FACTORIES))
async def test_a_traced_send_and_group_send_arrive_with_the_context_of_their_span(
    backend: str, tracer: Tracing, spans: InMemorySpanExporter
) -> None:
    async with LAYER_FACTORIES[backend]() as layer:
        tracer.instrument_layer("default", layer)
        channel = await layer.new_channel()
        await layer.group_add("traced", channel)
        sent = {"type": "news", "items": [1, 2]}
        await layer.send(channel, sent)
        await layer.group_send(group="traced", message=sent)  # Channels' keywords work too
        assert sent == {"type": "news", "items": [1, 2]}  # the caller's message is left as it was
        received = [await layer.receive(channel), await layer.receive(channel)]
    producers = {span.name: span for span in spans.get_finished_spans()}
    assert sorted(producers) == ["group_send news", "send news"]
    for message, name in zip(received, ("send news", "group_send news"), strict=True):
        assert sorted(message) == ["_trace", "items", "type"] and message["items"] == [1, 2]
        context, sent_at = _parse(message[tracing.TRACE_KEY])
        assert context is not None and sent_at is not None
        assert (context.trace_id, context.span_id) == (
            producers[name].context.trace_id,
            producers[name].context.span_id,
        )
