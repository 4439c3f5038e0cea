"""What ``TETHER_TRACING = True`` records in one process, over a real uvicorn server: the connection span, a child
span per message handled, the ``group_send`` span that each delivery links to, and the delivery lag; and what it
leaves out (message bodies, query strings, captured URL values). tests/tracing/test_live.py follows a ``group_send``
from one process to another over Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from django.test import override_settings
from django.urls import path
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.project.harness import http_get
from tests.tracing.conftest import lag_counts
from tether import tracing
from tether.consumer import AsyncConsumer
from tether.generic.http import AsyncHttpConsumer
from tether.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from tether.layers import get_channel_layer
from tether.routing import URLRouter
from tether.testing import ApplicationCommunicator, WebsocketCommunicator
from tether.tracing.otel import route_of

WAIT = 30.0
SECRETS = ("hunter2", "room-7", "secret body")


class Traced(AsyncWebsocketConsumer):
    """Echoes frames; on "broadcast" sends a group event to its own group, and answers it with the keys it saw."""

    async def connect(self) -> None:
        self.group = "traced-" + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.group, self.channel_name)  # type: ignore[union-attr]
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "broadcast":
            await self.channel_layer.group_send(self.group, {"type": "news", "text": "secret body"})  # type: ignore[union-attr]
        else:
            await self.send(text_data=text_data)

    async def news(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(sorted(message)))


class UnsampledTraced(Traced):
    """The same consumer, whose connections the tests' sampler drops."""


class Page(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(200, b"page", headers={"content-type": "text/plain"})


class Broken(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise LookupError("no such thing")


def application() -> Any:
    return URLRouter(
        [
            path("ws/traced/<str:room>/", Traced.as_asgi()),
            path("ws/unsampled/<str:room>/", UnsampledTraced.as_asgi()),
            path("ws/broken/", Broken.as_asgi()),
            path("page/<int:number>/", Page.as_asgi()),
        ]
    )


@pytest.fixture
def tracing_on() -> Iterator[None]:
    with override_settings(TETHER_TRACING=True):
        assert tracing.enabled()
        yield
    assert not tracing.enabled()


def wait_for_span(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """Every finished span, once one named ``name`` has ended (the server ends the connection after the client)."""
    deadline = time.monotonic() + WAIT
    while True:
        finished = list(exporter.get_finished_spans())
        if any(span.name == name for span in finished):
            return finished
        assert time.monotonic() < deadline, f"no span {name!r} in {[span.name for span in finished]}"
        time.sleep(0.05)


async def talk(url: str) -> list[str]:
    """Echo one frame, broadcast once, close normally; the frames received."""
    async with websockets.connect(url, open_timeout=WAIT) as ws:
        await ws.send("hello")
        replies = [str(await asyncio.wait_for(ws.recv(), WAIT))]
        await ws.send("broadcast")
        replies.append(str(await asyncio.wait_for(ws.recv(), WAIT)))
    return replies


def attribute_values(spans: list[ReadableSpan]) -> str:
    return " ".join(f"{span.name} {dict(span.attributes or {})}" for span in spans)


async def test_a_connection_and_its_messages_are_spans_and_the_delivery_links_to_the_group_send(
    serve: Any, tracing_on: None, spans: InMemorySpanExporter, lag_reader: InMemoryMetricReader
) -> None:
    server = serve(application())
    lag_before = lag_counts(lag_reader).get("Traced", 0)
    replies = await talk(f"{server.ws_url}/ws/traced/room-7/?token=hunter2")
    # The handler never saw the trace entry: the group event holds what was sent, nothing more.
    assert replies == ["hello", '["text", "type"]']
    finished = await asyncio.to_thread(wait_for_span, spans, "websocket Traced")

    (connection,) = [span for span in finished if span.name == "websocket Traced"]
    assert connection.kind is SpanKind.SERVER and connection.parent is None
    assert dict(connection.attributes or {}) == {
        "tether.consumer": "tests.tracing.test_tracing.Traced",
        "network.protocol.name": "websocket",
        "url.scheme": "ws",
        "tether.route": "/ws/traced/{room}/",
        "tether.outcome": "accepted",
        "tether.close_code": 1000,  # the client's
    }
    trace_id, connection_id = connection.context.trace_id, connection.context.span_id
    children = sorted(
        (span for span in finished if span.parent is not None and span.parent.span_id == connection_id),
        key=lambda span: span.start_time or 0,
    )
    assert [span.name for span in children] == [
        "websocket.connect",
        "websocket.receive",
        "websocket.receive",
        "news",
        "websocket.disconnect",
    ]
    assert all(span.context.trace_id == trace_id for span in children)
    # The disconnect ends the consumer with StopConsumer: its normal end, not an error.
    assert [span.name for span in finished if span.status.status_code is StatusCode.ERROR] == []
    (sent,) = [span for span in finished if span.name == "group_send news"]
    # The group_send was made by the handler of the second frame, inside its span.
    assert sent.kind is SpanKind.PRODUCER and sent.parent is not None
    assert sent.parent.span_id == children[2].context.span_id
    assert dict(sent.attributes or {}) == {
        "messaging.system": "tether",
        "messaging.operation.type": "send",
        "messaging.operation.name": "group_send",
        "tether.layer": "default",
        "tether.message.type": "news",
    }
    delivery = children[3]
    assert delivery.kind is SpanKind.CONSUMER
    assert [link.context.span_id for link in delivery.links] == [sent.context.span_id]
    lag = (delivery.attributes or {})["tether.delivery.lag"]
    assert isinstance(lag, float) and 0 <= lag < WAIT
    assert lag_counts(lag_reader)["Traced"] == lag_before + 1
    # Nothing the client or the handler sent, nor the captured room, is in a span.
    everything = attribute_values(finished)
    assert not [secret for secret in SECRETS if secret in everything], everything


async def test_an_unsampled_connection_runs_untraced_and_records_neither_spans_nor_lag(
    serve: Any, tracing_on: None, spans: InMemorySpanExporter, lag_reader: InMemoryMetricReader
) -> None:
    server = serve(application())
    lag_before = lag_counts(lag_reader).get("UnsampledTraced", 0)
    # The trace key is still removed before the handler: the consumer's own dispatch does it.
    assert await talk(f"{server.ws_url}/ws/unsampled/room-7/") == ["hello", '["text", "type"]']
    # A traced connection afterwards: once its span has ended, the unsampled one's would have been exported too.
    await talk(f"{server.ws_url}/ws/traced/room-8/")
    finished = await asyncio.to_thread(wait_for_span, spans, "websocket Traced")
    # The handler's group_send is a child of the unsampled connection's span: not sampled either.
    assert [span for span in finished if "Unsampled" in attribute_values([span])] == []
    assert sum(span.name == "group_send news" for span in finished) == 1
    assert lag_counts(lag_reader).get("UnsampledTraced", 0) == lag_before


async def test_an_http_consumer_gets_a_connection_span_with_its_status_and_a_span_for_the_request(
    serve: Any, tracing_on: None, spans: InMemorySpanExporter
) -> None:
    server = serve(application())
    status, body = await asyncio.to_thread(http_get, f"http://{server.host}:{server.port}/page/31/?token=hunter2")
    assert (status, body) == (200, "page")
    finished = await asyncio.to_thread(wait_for_span, spans, "http Page")
    (connection,) = [span for span in finished if span.name == "http Page"]
    assert connection.kind is SpanKind.SERVER
    attributes = dict(connection.attributes or {})
    assert attributes["tether.route"] == "/page/{number}/"
    assert attributes["http.response.status_code"] == 200 and attributes["url.scheme"] == "http"
    (request,) = [span for span in finished if span.parent is not None]
    assert request.name == "http.request" and request.parent.span_id == connection.context.span_id  # type: ignore[union-attr]
    assert "hunter2" not in attribute_values(finished)


async def test_a_handler_that_raises_marks_its_span_and_the_connection_span_as_failed(
    serve: Any, tracing_on: None, spans: InMemorySpanExporter
) -> None:
    server = serve(application())
    async with websockets.connect(f"{server.ws_url}/ws/broken/", open_timeout=WAIT) as ws:
        await ws.send("anything")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)
    finished = await asyncio.to_thread(wait_for_span, spans, "websocket Broken")
    failed = {span.name: span for span in finished if span.status.status_code is StatusCode.ERROR}
    assert sorted(failed) == ["websocket Broken", "websocket.receive"]
    (event,) = failed["websocket.receive"].events
    assert event.name == "exception" and (event.attributes or {})["exception.type"] == "LookupError"


class Keys(AsyncWebsocketConsumer):
    groups = ["keys"]

    async def news(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(sorted(message)))


async def test_with_tracing_off_the_layer_is_not_wrapped_and_a_carried_trace_entry_reaches_no_handler() -> None:
    assert not tracing.enabled()
    layer = get_channel_layer()
    assert layer is not None and "group_send" not in vars(layer) and "send" not in vars(layer)
    communicator = WebsocketCommunicator(Keys.as_asgi(), "/")
    await communicator.connect(WAIT)
    # As a process that traces would send it.
    entry = json.dumps({"context": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, "sent_at": time.time()})
    await layer.group_send("keys", {"type": "news", "text": "x", tracing.TRACE_KEY: entry})
    assert await communicator.receive_from(WAIT) == '["text", "type"]'
    await communicator.disconnect()


async def test_with_metrics_on_too_a_connection_is_both_counted_and_traced(spans: InMemorySpanExporter) -> None:
    prometheus_client = pytest.importorskip("prometheus_client", reason="the 'metrics' extra is not installed")
    from tether import metrics

    def received() -> float:
        metrics.flush()
        labels = {"consumer": "Keys", "kind": "layer"}
        return prometheus_client.REGISTRY.get_sample_value("tether_messages_received_total", labels) or 0.0

    with override_settings(TETHER_METRICS=True, TETHER_TRACING=True):
        before = received()
        communicator = WebsocketCommunicator(Keys.as_asgi(), "/")
        await communicator.connect(WAIT)
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send("keys", {"type": "news"})
        assert await communicator.receive_from(WAIT) == '["type"]'
        await communicator.disconnect()
        assert received() == before + 1
    names = [span.name for span in spans.get_finished_spans()]
    assert names.count("news") == 1 and names.count("group_send news") == 1 and "websocket Keys" in names


class SyncKeys(WebsocketConsumer):
    groups = ["sync-keys"]

    def news(self, message: dict[str, Any]) -> None:
        self.send(text_data=json.dumps(sorted(message)))


class Worker(AsyncConsumer):
    async def job_run(self, message: dict[str, Any]) -> None:
        assert tracing.TRACE_KEY not in message


async def test_a_sync_consumer_delivery_is_traced_with_its_lag(
    tracing_on: None, spans: InMemorySpanExporter, lag_reader: InMemoryMetricReader
) -> None:
    lag_before = lag_counts(lag_reader).get("SyncKeys", 0)
    communicator = WebsocketCommunicator(SyncKeys.as_asgi(), "/")
    await communicator.connect(WAIT)
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send("sync-keys", {"type": "news"})
    # The handler ran in a thread, and its send came back to the loop: the lag was measured all the same.
    assert await communicator.receive_from(WAIT) == '["type"]'
    await communicator.disconnect()
    (delivery,) = [span for span in spans.get_finished_spans() if span.name == "news"]
    assert delivery.kind is SpanKind.CONSUMER and "tether.delivery.lag" in (delivery.attributes or {})
    assert lag_counts(lag_reader)["SyncKeys"] == lag_before + 1


async def test_a_worker_message_span_is_a_root_linked_to_the_send(
    tracing_on: None, spans: InMemorySpanExporter
) -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.send("jobs", {"type": "job.run"})
    message = await layer.receive("jobs")
    # As the worker's channel router would hand it over.
    communicator = ApplicationCommunicator(Worker.as_asgi(), {"type": "channel"})
    await communicator.send_input(message)
    finished = await asyncio.to_thread(wait_for_span, spans, "job.run")
    (sent,) = [span for span in finished if span.name == "send job.run"]
    (job,) = [span for span in finished if span.name == "job.run"]
    assert job.parent is None and job.kind is SpanKind.CONSUMER
    assert [link.context.span_id for link in job.links] == [sent.context.span_id]
    communicator.stop()


@pytest.mark.parametrize(
    ("path", "captured", "route"),
    [
        ("/ws/room/42/", {"kwargs": {"room": 42}}, "/ws/room/{room}/"),
        ("/a/7/b/7/", {"args": ("7",)}, "/a/{0}/b/{0}/"),
        ("/files/x/secret/name.txt", {"kwargs": {"rest": "x/secret/name.txt"}}, "/files/{rest}"),
        ("/ws/room//", {"kwargs": {"room": ""}}, "/ws/room//"),
        ("/ws/echo/", None, "/ws/echo/"),
    ],
)
def test_the_route_names_captured_values_instead_of_showing_them(
    path: str, captured: dict[str, Any] | None, route: str
) -> None:
    scope: dict[str, Any] = {"type": "websocket", "path": path, "query_string": b"token=hunter2"}
    if captured is not None:
        scope["url_route"] = captured
    assert route_of(scope) == route
