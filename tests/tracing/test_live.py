"""A ``group_send`` made in a Django view of one uvicorn process, delivered to sockets of that process and of
another over the Redis layer: every delivery's span, in either process, links to the view's ``group_send`` span.

Each process serves the test project with ``PROJECT_TRACING_FILE`` set, which turns ``TETHER_TRACING`` on and sends
every span to a file of its own (tests/project/project/spans_to_file.py); the test reads both files. Spans are
written as they end, after the frame they stand for has been sent, so the test polls the files, bounded.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.layers.conftest import REDIS_URL
from tests.project.harness import copy_project, http_get, uvicorn_processes

pytest.importorskip("opentelemetry.sdk", reason="the 'otel' extra of django-tether is not installed")
pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")

from tether.layers.redis import RedisChannelLayer

WAIT = 30.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, Path]]]:
    """Two uvicorn processes of the test project on one Redis prefix, each with its span file."""
    root = tmp_path_factory.mktemp("tracing")
    prefix = f"tether-test-tracing-{secrets.token_hex(6)}"
    span_files = [root / "spans-0.jsonl", root / "spans-1.jsonl"]
    envs = [
        {"PROJECT_REDIS_PREFIX": prefix, "PROJECT_REDIS_URL": REDIS_URL, "PROJECT_TRACING_FILE": str(span_file)}
        for span_file in span_files
    ]
    try:
        with uvicorn_processes(copy_project(root / "project"), envs, "--log-level", "info") as commands:
            yield [(command.host, span_file) for command, span_file in zip(commands, span_files, strict=True)]
    finally:
        asyncio.run(forget_prefix(prefix))


async def forget_prefix(prefix: str) -> None:
    """Delete what the servers left in Redis under ``prefix``."""
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    await layer.flush()
    await layer.close()


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("}")]


def spans_when(path: Path, name: str, count: int) -> list[dict[str, Any]]:
    """The spans of ``path`` once ``count`` of them are named ``name`` (bounded by WAIT)."""
    deadline = time.monotonic() + WAIT
    while True:
        spans = read_spans(path)
        if sum(span["name"] == name for span in spans) >= count:
            return spans
        assert time.monotonic() < deadline, f"{path.name}: {[span['name'] for span in spans]}"
        time.sleep(0.1)


async def test_a_group_send_in_a_view_links_to_its_deliveries_in_both_processes(
    servers: list[tuple[str, Path]],
) -> None:
    (first, first_spans), (second, second_spans) = servers
    group = f"news-{secrets.token_hex(4)}"
    listeners = [
        await websockets.connect(f"ws://{host}/ws/listen/{group}/", open_timeout=WAIT)
        for host in (first, second, second)
    ]
    try:
        status, body = await asyncio.to_thread(http_get, f"http://{first}/broadcast/{group}/?text=hunter2")
        assert (status, body) == (200, "sent")
        for listener in listeners:
            assert await asyncio.wait_for(listener.recv(), WAIT) == "hunter2"
    finally:
        for listener in listeners:
            await listener.close()

    # The connection spans end last (after the close): once they are there, so are the others.
    sender_side = await asyncio.to_thread(spans_when, first_spans, "websocket ListenConsumer", 1)
    (sent,) = [span for span in sender_side if span["name"] == "group_send news"]
    assert sent["kind"] == "PRODUCER" and sent["attributes"]["tether.layer"] == "default"
    send_ids = {"trace_id": sent["trace_id"], "span_id": sent["span_id"]}
    receiver_side = await asyncio.to_thread(spans_when, second_spans, "websocket ListenConsumer", 2)
    deliveries = [span for span in sender_side + receiver_side if span["name"] == "news"]
    assert len(deliveries) == 3
    for delivery in deliveries:
        assert delivery["kind"] == "CONSUMER"
        assert delivery["links"] == [send_ids]
        assert delivery["attributes"]["tether.consumer"] == "project.consumers.ListenConsumer"
        assert delivery["attributes"]["tether.delivery.lag"] >= 0
        # Each delivery belongs to its connection's trace, not the send's.
        assert delivery["trace_id"] != sent["trace_id"]
        (connection,) = [span for span in sender_side + receiver_side if span["span_id"] == delivery["parent_span_id"]]
        assert connection["name"] == "websocket ListenConsumer" and connection["trace_id"] == delivery["trace_id"]
    # The text (a body) and the group name (from the URL) appear in no span.
    written = first_spans.read_text() + second_spans.read_text()
    assert "hunter2" not in written and group not in written
