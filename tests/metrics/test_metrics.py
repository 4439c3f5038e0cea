"""What ``TETHER_METRICS = True`` counts, in one process: each handshake outcome, close codes, frames, handler
durations, layer calls and their errors, and what ``metrics_view`` serves. tests/metrics/test_live.py checks the same
numbers over HTTP across two uvicorn processes."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, override_settings

from tether import metrics, outbound
from tether.exceptions import ChannelFull, DenyConnection
from tether.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from tether.layers import InMemoryChannelLayer, channel_layers
from tether.limits import SLOW_CLIENT
from tether.metrics.observe import ConnectionWatch
from tether.metrics.tally import (
    DURATION_BUCKETS,
    TIMED_EVERY,
    ConsumerCounts,
    Tally,
    _Histogram,
    close_code_label,
    message_kind,
)
from tether.outbound import Outbox
from tether.testing import WebsocketCommunicator
from tether.types import Message, Receive, Scope, Send

prometheus_client = pytest.importorskip("prometheus_client", reason="the 'metrics' extra is not installed")

from tether.metrics import export  # noqa: E402, F401  (registers the metrics)
from tether.metrics.views import metrics_view  # noqa: E402

WAIT = 10


@pytest.fixture
def metrics_on() -> Iterator[None]:
    with override_settings(TETHER_METRICS=True):
        yield


def sample(name: str, **labels: str) -> float:
    """A sample of the default registry after copying this process's counts into it (0 when it does not exist)."""
    metrics.flush()
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)
        if text_data == "close":
            await self.close(4321)


class Refusing(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.close()


class Denying(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        raise DenyConnection(status=401)


class Failing(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        raise RuntimeError("the handler is broken")


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=text_data)


def attempts(consumer: str, outcome: str) -> float:
    return sample("tether_websocket_connection_attempts_total", consumer=consumer, outcome=outcome)


# -- the plain parts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "label"), [(1000, "1000"), (1006, "1006"), (4401, "4401"), (3999, "3xxx"), (4000, "4xxx"), (999, "other")]
)
def test_close_codes_are_kept_by_value_or_folded_into_a_range(code: int, label: str) -> None:
    assert close_code_label(code) == label


def test_message_kinds_never_carry_the_message_type() -> None:
    assert message_kind({"type": "websocket.receive", "text": "hi"}) == "text"
    assert message_kind({"type": "websocket.receive", "bytes": b"hi"}) == "binary"
    assert message_kind({"type": "websocket.connect"}) == "connect"
    assert message_kind({"type": "chat.message", "room": "lobby"}) == "layer"


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    histogram = _Histogram(DURATION_BUCKETS)
    for value in (0.0005, 0.0006, 99.0):
        histogram.observe(value)
    assert histogram.counts[0] == 1 and histogram.counts[1] == 1 and histogram.counts[-1] == 1
    assert histogram.count == 3


def test_a_weighted_observation_counts_as_that_many() -> None:
    histogram = _Histogram(DURATION_BUCKETS)
    histogram.observe(0.002, 8)
    assert histogram.counts[2] == 8 and histogram.count == 8
    assert histogram.total == pytest.approx(0.016)


@pytest.mark.parametrize(("setting", "value"), [("TETHER_METRICS", "yes"), ("TETHER_METRICS_FLUSH_INTERVAL", 0)])
def test_a_bad_setting_is_named(setting: str, value: object) -> None:
    wrong = {"TETHER_METRICS": True, setting: value}
    with pytest.raises(ImproperlyConfigured, match=setting), override_settings(**wrong):
        pass
    metrics.configure()
    assert not metrics.enabled()


# -- counting --------------------------------------------------------------------------------------------------------


async def test_off_by_default_and_nothing_is_observed() -> None:
    assert not metrics.enabled()
    communicator = WebsocketCommunicator(Echo.as_asgi(), "/")
    assert (await communicator.connect(WAIT))[0]
    await communicator.disconnect()
    response = metrics_view(RequestFactory().get("/metrics/"))
    assert response.status_code == 404
    assert b"TETHER_METRICS = True" in response.content


async def test_frames_handlers_and_closes_of_an_accepted_connection(metrics_on: None) -> None:
    before = {
        "accepted": attempts("Echo", "accepted"),
        "text": sample("tether_messages_received_total", consumer="Echo", kind="text"),
        "binary_out": sample("tether_messages_sent_total", consumer="Echo", kind="binary"),
        "4xxx": sample("tether_websocket_closes_total", consumer="Echo", code="4xxx"),
        "1000": sample("tether_websocket_closes_total", consumer="Echo", code="1000"),
        "connects": sample("tether_handler_duration_seconds_count", consumer="Echo", kind="connect"),
        "fast": sample("tether_handler_duration_seconds_bucket", consumer="Echo", kind="connect", le="10.0"),
    }
    first = WebsocketCommunicator(Echo.as_asgi(), "/")
    assert (await first.connect(WAIT))[0]
    assert sample("tether_websocket_connections_open", consumer="Echo") == 1
    await first.send_to(text_data="one")
    await first.send_to(bytes_data=b"two")
    await first.send_to(text_data="close")
    for _ in range(3):
        await first.receive_output(WAIT)
    assert (await first.receive_output(WAIT)) == {"type": "websocket.close", "code": 4321}
    await first.send_input({"type": "websocket.disconnect", "code": 4321})
    await first.wait(WAIT)
    second = WebsocketCommunicator(Echo.as_asgi(), "/")
    assert (await second.connect(WAIT))[0]
    await second.disconnect(1000)

    assert attempts("Echo", "accepted") - before["accepted"] == 2
    assert sample("tether_websocket_connections_open", consumer="Echo") == 0
    assert sample("tether_messages_received_total", consumer="Echo", kind="text") - before["text"] == 2
    assert sample("tether_messages_sent_total", consumer="Echo", kind="binary") - before["binary_out"] == 1
    # The consumer's own close code, not the one the client echoed; the second closed by the client with 1000.
    assert sample("tether_websocket_closes_total", consumer="Echo", code="4xxx") - before["4xxx"] == 1
    assert sample("tether_websocket_closes_total", consumer="Echo", code="1000") - before["1000"] == 1
    # Every connect handler is timed; buckets are cumulative in the exposition: both took well under 10 s.
    assert sample("tether_handler_duration_seconds_count", consumer="Echo", kind="connect") - before["connects"] == 2
    assert (
        sample("tether_handler_duration_seconds_bucket", consumer="Echo", kind="connect", le="10.0") - before["fast"]
        == 2
    )


async def test_one_frame_in_timed_every_is_timed_and_counts_for_them_all(metrics_on: None) -> None:
    # Turning metrics on starts a fresh tally, so the Echo class's text frames are counted from zero here.
    before = {
        "received": sample("tether_messages_received_total", consumer="Echo", kind="text"),
        "timed": sample("tether_handler_duration_seconds_count", consumer="Echo", kind="text"),
    }
    communicator = WebsocketCommunicator(Echo.as_asgi(), "/")
    assert (await communicator.connect(WAIT))[0]
    frames = 2 * TIMED_EVERY - 1
    for index in range(frames):
        await communicator.send_to(text_data=f"frame {index}")
        assert await communicator.receive_from(WAIT) == f"frame {index}"
    await communicator.disconnect()

    assert sample("tether_messages_received_total", consumer="Echo", kind="text") - before["received"] == frames
    # The TIMED_EVERY-th frame was timed and stands for the frames before it; the ones after wait for the next.
    timed = sample("tether_handler_duration_seconds_count", consumer="Echo", kind="text") - before["timed"]
    assert timed == TIMED_EVERY


async def test_refused_denied_failed_and_abandoned_handshakes(metrics_on: None) -> None:
    before = {
        (name, outcome): attempts(name, outcome)
        for name, outcome in [
            ("Refusing", "refused"),
            ("Denying", "denied"),
            ("Failing", "failed"),
            ("Echo", "abandoned"),
        ]
    }
    communicator = WebsocketCommunicator(Refusing.as_asgi(), "/")
    assert not (await communicator.connect(WAIT))[0]
    communicator = WebsocketCommunicator(Denying.as_asgi(), "/", spec_version="2.4")
    communicator.scope["extensions"] = {"websocket.http.response": {}}
    await communicator.send_input({"type": "websocket.connect"})
    assert (await communicator.receive_output(WAIT))["status"] == 401
    await communicator.receive_output(WAIT)  # the body
    await communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    await communicator.wait(WAIT)
    communicator = WebsocketCommunicator(Failing.as_asgi(), "/")
    with pytest.raises(RuntimeError, match="broken"):
        await communicator.connect(WAIT)
    communicator = WebsocketCommunicator(Echo.as_asgi(), "/")
    await communicator.send_input({"type": "websocket.disconnect", "code": 1001})  # gone before any answer
    await communicator.wait(WAIT)
    for (name, outcome), count in before.items():
        assert attempts(name, outcome) - count == 1, (name, outcome)


async def test_a_sync_consumer_is_counted_too(metrics_on: None) -> None:
    before = sample("tether_messages_sent_total", consumer="SyncEcho", kind="text")
    communicator = WebsocketCommunicator(SyncEcho.as_asgi(), "/")
    assert (await communicator.connect(WAIT))[0]
    await communicator.send_to(text_data="hi")
    assert await communicator.receive_from(WAIT) == "hi"
    await communicator.disconnect()
    assert sample("tether_messages_sent_total", consumer="SyncEcho", kind="text") - before == 1


class WrappedEcho(Echo):
    """A consumer with a ``__call__`` and a ``dispatch`` of its own, as a project may write: AsyncConsumer's count
    in line, this one is counted by wrappers, and all the same."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def dispatch(self, message: Message) -> None:
        await super().dispatch(message)


async def test_a_consumer_with_its_own_call_and_dispatch_is_counted_once(metrics_on: None) -> None:
    before = {
        "accepted": attempts("WrappedEcho", "accepted"),
        "text": sample("tether_messages_sent_total", consumer="WrappedEcho", kind="text"),
        "binary": sample("tether_messages_sent_total", consumer="WrappedEcho", kind="binary"),
        "text_in": sample("tether_messages_received_total", consumer="WrappedEcho", kind="text"),
        "binary_in": sample("tether_messages_received_total", consumer="WrappedEcho", kind="binary"),
        "connects": sample("tether_handler_duration_seconds_count", consumer="WrappedEcho", kind="connect"),
    }
    communicator = WebsocketCommunicator(WrappedEcho.as_asgi(), "/")
    assert (await communicator.connect(WAIT))[0]
    await communicator.send_to(text_data="one")
    assert await communicator.receive_from(WAIT) == "one"
    await communicator.send_to(bytes_data=b"two")
    assert await communicator.receive_from(WAIT) == b"two"
    await communicator.disconnect()

    assert attempts("WrappedEcho", "accepted") - before["accepted"] == 1
    # Counted once each: by the wrapper around ``send`` here, not also by the connection's outbound queue.
    assert sample("tether_messages_sent_total", consumer="WrappedEcho", kind="text") - before["text"] == 1
    assert sample("tether_messages_sent_total", consumer="WrappedEcho", kind="binary") - before["binary"] == 1
    assert sample("tether_messages_received_total", consumer="WrappedEcho", kind="text") - before["text_in"] == 1
    assert sample("tether_messages_received_total", consumer="WrappedEcho", kind="binary") - before["binary_in"] == 1
    assert (
        sample("tether_handler_duration_seconds_count", consumer="WrappedEcho", kind="connect") - before["connects"]
        == 1
    )


class OwnDispatchEcho(Echo):
    """Only ``dispatch`` of its own: its frames are counted by its outbound queue, its messages by a wrapper."""

    async def dispatch(self, message: Message) -> None:
        await super().dispatch(message)


class OwnCallEcho(Echo):
    """Only ``__call__`` of its own: its frames are counted by a wrapper, its messages by ``dispatch`` in line."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


@pytest.mark.parametrize("consumer", [OwnDispatchEcho, OwnCallEcho])
async def test_a_consumer_with_only_a_call_or_only_a_dispatch_of_its_own_is_counted_once(
    metrics_on: None, consumer: type[Echo]
) -> None:
    name = consumer.__name__
    before = (
        sample("tether_messages_sent_total", consumer=name, kind="text"),
        sample("tether_messages_received_total", consumer=name, kind="text"),
        sample("tether_handler_duration_seconds_count", consumer=name, kind="connect"),
    )
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/")
    assert (await communicator.connect(WAIT))[0]
    await communicator.send_to(text_data="one")
    assert await communicator.receive_from(WAIT) == "one"
    await communicator.disconnect()
    after = (
        sample("tether_messages_sent_total", consumer=name, kind="text"),
        sample("tether_messages_received_total", consumer=name, kind="text"),
        sample("tether_handler_duration_seconds_count", consumer=name, kind="connect"),
    )
    assert [now - then for now, then in zip(after, before, strict=True)] == [1, 1, 1]


async def test_layer_calls_are_timed_and_their_errors_counted(metrics_on: None) -> None:
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1}}}
    ):
        layer = channel_layers["default"]
        assert isinstance(layer, InMemoryChannelLayer)  # still the layer's own class
        sent = sample("tether_layer_operation_duration_seconds_count", alias="default", operation="send")
        full = sample("tether_layer_errors_total", alias="default", operation="send", error="ChannelFull")
        dropped = sample("tether_layer_dropped_messages_total", alias="default", reason="channel_full")
        await layer.send("jobs", {"type": "job"})
        with pytest.raises(ChannelFull):
            await layer.send("jobs", {"type": "job"})
        await layer.group_add("everyone", "jobs")
        await layer.group_send("everyone", {"type": "job"})  # the member is full: dropped, counted by the layer
        assert sample("tether_layer_operation_duration_seconds_count", alias="default", operation="send") - sent == 2
        assert sample("tether_layer_errors_total", alias="default", operation="send", error="ChannelFull") - full == 1
        assert sample("tether_layer_dropped_messages_total", alias="default", reason="channel_full") - dropped == 1
        await layer.flush()


async def test_presence_and_stream_counts_are_exported_by_layer_alias(metrics_on: None) -> None:
    from tether.presence import get_presence
    from tether.streams import get_streams

    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.InMemoryChannelLayer"}}):
        layer = channel_layers["default"]
        before = {
            "joins": sample("tether_presence_events_total", alias="default", event="join"),
            "leaves": sample("tether_presence_events_total", alias="default", event="leave"),
            "published": sample("tether_stream_messages_published_total", alias="default"),
            "complete": sample("tether_stream_recoveries_total", alias="default", outcome="complete"),
            "epoch": sample("tether_stream_recoveries_total", alias="default", outcome="epoch"),
        }
        presence = get_presence(layer, batch_window=0.01)
        first, second = await layer.new_channel(), await layer.new_channel()
        await presence.join("room.1", first, user="ann", listen=False)
        await presence.join("room.1", second, user="bob", listen=False)
        assert sample("tether_presence_connections", alias="default") == 2
        await presence.leave("room.1", first)
        streams = get_streams(layer)
        position = await streams.publish("news.1", {"n": 1})
        await streams.publish("news.1", {"n": 2})
        assert (await streams.recover("news.1", position.epoch, 0)).complete
        assert not (await streams.recover("news.1", "not-this-epoch", 0)).complete

        assert sample("tether_presence_connections", alias="default") == 1
        assert sample("tether_presence_events_total", alias="default", event="join") - before["joins"] == 2
        assert sample("tether_presence_events_total", alias="default", event="leave") - before["leaves"] == 1
        assert sample("tether_stream_messages_published_total", alias="default") - before["published"] == 2
        assert sample("tether_stream_recoveries_total", alias="default", outcome="complete") - before["complete"] == 1
        assert sample("tether_stream_recoveries_total", alias="default", outcome="epoch") - before["epoch"] == 1
        await presence.close()
        await layer.flush()


async def test_a_layer_built_again_for_an_alias_has_its_presence_and_stream_counts_exported_from_zero(
    metrics_on: None,
) -> None:
    from tether.presence import get_presence
    from tether.streams import get_streams

    def joins() -> float:
        return sample("tether_presence_events_total", alias="default", event="join")

    def published() -> float:
        return sample("tether_stream_messages_published_total", alias="default")

    for channels in (3, 1):  # a layer, then another for the same alias (settings changed) counting from zero again
        with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.InMemoryChannelLayer"}}):
            layer = channel_layers["default"]
            presence, streams = get_presence(layer), get_streams(layer)
            before = {"joins": joins(), "published": published()}
            for _ in range(channels):
                await presence.join("room.again", await layer.new_channel(), listen=False)
                await streams.publish("news.again", {})
            assert joins() - before["joins"] == channels
            assert published() - before["published"] == channels
            await presence.close()
            await layer.flush()


async def test_the_view_serves_the_exposition_format(metrics_on: None) -> None:
    communicator = WebsocketCommunicator(Echo.as_asgi(), "/")
    assert (await communicator.connect(WAIT))[0]
    await communicator.disconnect()
    response = await asyncio.to_thread(metrics_view, RequestFactory().get("/metrics/"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert b'tether_websocket_connection_attempts_total{consumer="Echo",outcome="accepted"}' in response.content
    assert metrics_view(RequestFactory().post("/metrics/")).status_code == 405


def test_the_docs_and_the_dashboard_name_the_metrics_that_exist() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in prometheus_client.REGISTRY.collect()
        if family.name.startswith("tether_")
    }
    documented = set(re.findall(r"^\| `(tether_[a-z_]+)` \|", (docs / "observability.md").read_text(), re.MULTILINE))
    assert documented == exposed
    dashboard = json.dumps(json.loads((docs / "grafana" / "tether.json").read_text()))
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"tether_[a-z_]+", dashboard)}
    assert used == exposed


def test_slow_client_and_rate_limit_drops_are_exported_by_reason(metrics_on: None) -> None:
    from tether import outbound
    from tether.ratelimit import limiter

    before = {reason: sample("tether_connection_dropped_messages_total", reason=reason) for reason in REASONS}
    with limiter._counts_lock:
        limiter._counts["messages_per_connection"] += 2
    outbound._counters["messages_dropped"] += 3
    outbound._counters["messages_discarded"] += 1
    outbound._counters["messages_conflated"] += 5
    after = {reason: sample("tether_connection_dropped_messages_total", reason=reason) for reason in REASONS}
    assert {reason: after[reason] - before[reason] for reason in REASONS} == {
        "slow_client": 4,
        "conflated": 5,
        "rate_limited": 2,
    }


REASONS = ("slow_client", "conflated", "rate_limited")


class NeverReads:
    """A server ``send`` for a client that reads nothing: each send waits for good, as uvicorn's with a full buffer;
    ``abort`` is found on its ``transport``, as on uvicorn's protocol."""

    def __init__(self) -> None:
        self.transport = self
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    async def send(self, message: Message) -> None:
        await asyncio.get_running_loop().create_future()


def never_read(counts: ConsumerCounts) -> tuple[ConnectionWatch, Outbox, NeverReads]:
    """A watched WebSocket's outbound queue (``disconnect``, one frame) to a client that reads nothing: its watch, the
    queue, the server's side."""
    server = NeverReads()
    watch = ConnectionWatch(counts, True, server.send, outbox_counts=True)
    box = Outbox(
        server.send,
        policy=lambda: "disconnect",
        size=lambda: 1,
        conflate_key=lambda message: None,
        name=lambda: "NeverReadsEcho",
        stall_timeout=lambda: WAIT,
        watcher=watch,
    )
    return watch, box, server


async def slow_client_closed(counts: ConsumerCounts) -> tuple[ConnectionWatch, Outbox, NeverReads]:
    """A watched WebSocket's outbound queue that closed its client, which read nothing, as too slow (aborted, with
    ``short_close_grace``): its watch, the queue, the server's side."""
    watch, box, server = never_read(counts)
    await box.send({"type": "websocket.accept"})  # the server pushes back from here on
    for _ in range(2):
        await box.send({"type": "websocket.send", "text": "too much"})
    await asyncio.wait_for(asyncio.shield(box.closer), WAIT)  # type: ignore[arg-type]
    return watch, box, server


@pytest.fixture
def short_close_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow client's close frame is given up on after 50 ms, and the connection aborted."""
    monkeypatch.setattr(outbound, "CLOSE_GRACE", 0.05)


async def test_a_slow_client_aborted_by_its_outbound_queue_counts_under_the_slow_client_close_code(
    short_close_grace: None,
) -> None:
    counts = Tally().consumer("NeverReadsEcho")
    watch, box, server = await slow_client_closed(counts)
    assert server.aborted  # the close frame never went out: the client hears 1006
    watch.ended(failed=False)
    await box.close()
    # The code the server closed it with, as when the consumer itself closes, not the 1006 of the aborted socket.
    assert counts.closes == {close_code_label(SLOW_CLIENT): 1}


async def test_a_frame_refused_once_the_outbound_queue_closed_a_slow_client_is_not_counted_as_sent(
    short_close_grace: None,
) -> None:
    counts = Tally().consumer("NeverReadsEcho")
    _, box, _ = await slow_client_closed(counts)
    sent = counts.sent_text
    with pytest.raises(ConnectionResetError):
        await box.send({"type": "websocket.send", "text": "after the close"})
    await box.close()
    assert counts.sent_text == sent


async def test_a_frame_that_waited_for_room_until_the_connection_closed_is_not_counted_as_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbound, "HOP_GRACE", WAIT)  # the frame waits for room until the connection ends
    counts = Tally().consumer("NeverReadsEcho")
    _, box, _ = never_read(counts)
    await box.send({"type": "websocket.accept"})  # the server pushes back from here on
    await box.send({"type": "websocket.send", "text": "waits in the queue"})  # the queue is full
    waiting = asyncio.get_running_loop().create_task(box.send({"type": "websocket.send", "text": "waits for room"}))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()
    await box.close()
    with pytest.raises(ConnectionResetError):
        await waiting
    assert counts.sent_text == 1
