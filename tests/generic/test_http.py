"""AsyncHttpConsumer: whole-body handling, responses in one or two steps, streaming, and disconnects.

The first part drives consumers through the communicators; the last part serves them with uvicorn and talks HTTP/1.1
to it over a plain socket (no HTTP client package needed), reading chunked bodies part by part.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from django.urls import path

from tests.consumers import http_urlpatterns
from tether.generic.http import AsyncHttpConsumer, ResponseState
from tether.layers import get_channel_layer
from tether.routing import URLRouter
from tether.testing import ApplicationCommunicator, HttpCommunicator


class BodyEcho(AsyncHttpConsumer):
    """Answers with the request body, its method and query string; notes each disconnect() in ``calls``."""

    calls = None

    async def handle(self, body):
        await self.send_response(
            200,
            body,
            headers=[(b"x-method", self.scope["method"].encode()), (b"x-query", self.scope["query_string"])],
        )

    async def disconnect(self):
        self.calls.append("disconnect")


class TwoSteps(AsyncHttpConsumer):
    """Sends headers given as a dict of str, then the body in two parts."""

    async def handle(self, body):
        await self.send_headers(status=201, headers={"Content-Type": "text/plain", "X-Steps": "2"})
        await self.send_body(b"first ", more_body=True)
        await self.send_body(b"second")


class Misuse(AsyncHttpConsumer):
    """Misuses the response API as the request path says."""

    async def handle(self, body):
        mistake = self.scope["path"].strip("/")
        if mistake == "text-body":
            await self.send_headers()
            await self.send_body("not bytes")
        elif mistake == "body-first":
            await self.send_body(b"too early")
        elif mistake == "headers-twice":
            await self.send_headers()
            await self.send_headers()
        elif mistake == "body-after-end":
            await self.send_response(200, b"done")
            await self.send_body(b"more")


class Failing(AsyncHttpConsumer):
    calls = None

    async def handle(self, body):
        raise LookupError("no such report")

    async def disconnect(self):
        self.calls.append("disconnect")


class NoHandle(AsyncHttpConsumer):
    pass


STREAMS = URLRouter(http_urlpatterns)


def http_scope(path: str = "/", method: str = "POST") -> dict:
    return {"type": "http", "method": method, "path": path, "query_string": b"", "headers": []}


async def wait_for_groups(count: int, timeout: float = 2) -> None:
    """Wait (bounded) until the in-memory layer holds ``count`` groups: a streaming consumer has subscribed."""
    layer = get_channel_layer()
    deadline = time.monotonic() + timeout
    while layer.stats()["groups"] != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} group(s), the layer holds {layer.stats()['groups']}")
        await asyncio.sleep(0.005)


# Requests and responses ---------------------------------------------------------------------------------------------


async def test_handle_gets_the_whole_body_sent_in_several_parts():
    communicator = ApplicationCommunicator(BodyEcho.as_asgi(calls=[]), http_scope())
    await communicator.send_input({"type": "http.request", "body": b"one,", "more_body": True})
    await communicator.send_input({"type": "http.request", "body": b"two,", "more_body": True})
    assert await communicator.receive_nothing()
    await communicator.send_input({"type": "http.request", "body": b"three"})
    start = await communicator.receive_output()
    body = await communicator.receive_output()
    assert start["status"] == 200
    assert body == {"type": "http.response.body", "body": b"one,two,three", "more_body": False}


async def test_send_response_with_list_headers():
    communicator = HttpCommunicator(BodyEcho.as_asgi(calls=[]), "PUT", "/echo/?a=1&b=two", body=b"payload")
    response = await communicator.get_response()
    assert response["status"] == 200
    assert response["headers"] == [(b"x-method", b"PUT"), (b"x-query", b"a=1&b=two")]
    assert response["body"] == b"payload"


async def test_send_headers_with_a_dict_then_body_in_parts():
    response = await HttpCommunicator(TwoSteps.as_asgi(), "GET", "/").get_response()
    assert response["status"] == 201
    assert response["headers"] == [(b"Content-Type", b"text/plain"), (b"X-Steps", b"2")]
    assert response["body"] == b"first second"


async def test_send_body_with_text_is_a_type_error():
    communicator = HttpCommunicator(Misuse.as_asgi(), "GET", "/text-body/")
    with pytest.raises(TypeError, match="send_body\\(\\) takes bytes, not str"):
        await communicator.get_response()


async def test_send_body_before_send_headers_is_a_runtime_error():
    communicator = HttpCommunicator(Misuse.as_asgi(), "GET", "/body-first/")
    with pytest.raises(RuntimeError, match="before send_headers"):
        await communicator.get_response()


async def test_send_headers_twice_is_a_runtime_error():
    communicator = HttpCommunicator(Misuse.as_asgi(), "GET", "/headers-twice/")
    with pytest.raises(RuntimeError, match="called twice"):
        await communicator.get_response()


async def test_send_body_after_the_response_finished_is_a_runtime_error():
    communicator = HttpCommunicator(Misuse.as_asgi(), "GET", "/body-after-end/")
    await communicator.get_response()
    with pytest.raises(RuntimeError, match="after the response finished"):
        await communicator.wait()


async def test_consumer_without_handle_raises_not_implemented_error():
    with pytest.raises(NotImplementedError, match="NoHandle must define handle"):
        await HttpCommunicator(NoHandle.as_asgi(), "GET", "/").get_response()


async def test_disconnect_is_called_once_after_the_response_and_the_consumer_ends():
    calls = []
    communicator = HttpCommunicator(BodyEcho.as_asgi(calls=calls), "GET", "/")
    await communicator.get_response()
    await communicator.wait()
    await communicator.send_input({"type": "http.disconnect"})
    assert calls == ["disconnect"]


async def test_client_disconnect_before_the_body_is_complete_calls_disconnect():
    calls = []
    communicator = ApplicationCommunicator(BodyEcho.as_asgi(calls=calls), http_scope())
    await communicator.send_input({"type": "http.request", "body": b"part", "more_body": True})
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait()
    assert calls == ["disconnect"]
    assert communicator.output_queue.empty()


async def test_exception_in_handle_calls_disconnect_is_logged_and_raised(caplog):
    calls = []
    communicator = HttpCommunicator(Failing.as_asgi(calls=calls), "GET", "/")
    with caplog.at_level(logging.ERROR, logger="tether.consumer"), pytest.raises(LookupError, match="no such report"):
        await communicator.get_response()
    assert calls == ["disconnect"]
    [record] = [r for r in caplog.records if r.name == "tether.consumer"]
    assert "tests.generic.test_http.Failing" in record.getMessage()
    assert "'http.request'" in record.getMessage()


# Streaming through the communicators --------------------------------------------------------------------------------


async def test_server_sent_events_stream_layer_events_until_the_end():
    layer = get_channel_layer()
    communicator = HttpCommunicator(STREAMS, "GET", "/sse/news/")
    await communicator.send_request()
    start = await communicator.receive_output()
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream") in start["headers"]
    assert (await communicator.receive_output())["body"] == b": subscribed\n\n"
    for data in ("one", "two"):
        await layer.group_send("stream.news", {"type": "stream.event", "data": data})
        part = await communicator.receive_output()
        assert part == {"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True}
    await layer.group_send("stream.news", {"type": "stream.end"})
    last = await communicator.receive_output()
    assert last["more_body"] is False
    await communicator.wait()
    assert layer.stats()["groups"] == 0


async def test_client_leaving_an_event_stream_calls_disconnect():
    communicator = HttpCommunicator(STREAMS, "GET", "/sse/leaving/")
    await communicator.send_request()
    await communicator.receive_output()
    await communicator.receive_output()
    assert get_channel_layer().stats()["groups"] == 1
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait()
    assert get_channel_layer().stats()["groups"] == 0


async def test_long_poll_answers_with_the_next_event():
    communicator = HttpCommunicator(STREAMS, "GET", "/poll/inbox/")
    await communicator.send_request()
    await wait_for_groups(1)
    assert await communicator.receive_nothing()
    await get_channel_layer().group_send("stream.inbox", {"type": "stream.event", "data": "you have mail"})
    response = await communicator.get_response()
    assert response["status"] == 200
    assert response["body"] == b"you have mail"
    await communicator.wait()
    assert get_channel_layer().stats()["groups"] == 0


async def test_long_poll_times_out_with_204():
    response = await HttpCommunicator(STREAMS, "GET", "/poll/quiet/?timeout=0.05").get_response()
    assert response["status"] == 204
    assert response["body"] == b""


# Over uvicorn -------------------------------------------------------------------------------------------------------


class RawResponse:
    """An HTTP/1.1 response read from a socket: status and headers at once, the body part by part."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}

    async def read_head(self) -> None:
        status_line = await self.reader.readline()
        self.status = int(status_line.split()[1])
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    async def read_chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" at the end."""
        size = int((await self.reader.readline()).split(b";")[0], 16)
        data = await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return data

    async def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding") == "chunked":
            parts = []
            while chunk := await self.read_chunk():
                parts.append(chunk)
            return b"".join(parts)
        return await self.reader.readexactly(int(self.headers.get("content-length", 0)))

    def close(self) -> None:
        self.writer.close()


async def open_request(server, method: str, path: str, body_parts: tuple[bytes, ...] = ()) -> RawResponse:
    """Send a request (chunked when it has a body, one write per part) and read the response head."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = f"{method} {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
    if body_parts:
        head += "Transfer-Encoding: chunked\r\n"
    writer.write(head.encode("latin-1") + b"\r\n")
    for part in body_parts:
        writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
    if body_parts:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    response = RawResponse(reader, writer)
    await asyncio.wait_for(response.read_head(), 5)
    return response


async def fetch(server, method: str, path: str, body_parts: tuple[bytes, ...] = ()) -> tuple[int, bytes]:
    response = await open_request(server, method, path, body_parts)
    try:
        return response.status, await asyncio.wait_for(response.read_body(), 5)
    finally:
        response.close()


async def test_uvicorn_serves_a_whole_body_sent_in_parts(serve):
    server = serve(URLRouter([path("echo/", BodyEcho.as_asgi(calls=[]))]))
    status, body = await fetch(server, "POST", "/echo/", (b"alpha,", b"beta,", b"gamma"))
    assert status == 200
    assert body == b"alpha,beta,gamma"


async def test_uvicorn_streams_server_sent_events_published_by_another_request(serve):
    server = serve(STREAMS)
    stream = await open_request(server, "GET", "/sse/live/")
    try:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert await asyncio.wait_for(stream.read_chunk(), 5) == b": subscribed\n\n"
        for data in (b"first", b"second"):
            assert await fetch(server, "POST", "/publish/live/", (data,)) == (202, b"published")
            assert await asyncio.wait_for(stream.read_chunk(), 5) == b"data: " + data + b"\n\n"
        assert (await fetch(server, "POST", "/publish/live/?end=1"))[0] == 202
        assert await asyncio.wait_for(stream.read_chunk(), 5) == b"event: end\ndata: \n\n"
        assert await asyncio.wait_for(stream.read_chunk(), 5) == b""
    finally:
        stream.close()


async def test_uvicorn_long_poll_answers_when_an_event_is_published(serve):
    server = serve(STREAMS)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"GET /poll/box/ HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
    await writer.drain()
    try:
        await wait_for_groups(1, timeout=5)
        assert await fetch(server, "POST", "/publish/box/", (b"ding",)) == (202, b"published")
        response = RawResponse(reader, writer)
        await asyncio.wait_for(response.read_head(), 5)
        assert response.status == 200
        assert await asyncio.wait_for(response.read_body(), 5) == b"ding"
    finally:
        writer.close()


async def test_uvicorn_client_leaving_an_event_stream_calls_disconnect(serve):
    server = serve(STREAMS)
    stream = await open_request(server, "GET", "/sse/gone/")
    await asyncio.wait_for(stream.read_chunk(), 5)
    assert get_channel_layer().stats()["groups"] == 1
    stream.close()
    await wait_for_groups(0, timeout=5)


def test_unknown_initkwargs_raise_type_error_at_as_asgi_time():
    with pytest.raises(TypeError, match=r"BodyEcho\.as_asgi\(\) got keyword\(s\) \['colour'\]"):
        BodyEcho.as_asgi(colour="red")


async def test_each_connection_starts_with_an_empty_body_and_a_fresh_response():
    app = BodyEcho.as_asgi(calls=[])
    for body in (b"first request", b"second"):
        response = await HttpCommunicator(app, "POST", "/", body=body).get_response()
        assert response["body"] == body


class StateRecorder(AsyncHttpConsumer):
    """Records the response state before the headers, between the body parts and after the last one."""

    seen: list[ResponseState] = []

    async def handle(self, body: bytes) -> None:
        self.seen.append(self.response_state)
        await self.send_headers()
        self.seen.append(self.response_state)
        await self.send_body(b"a", more_body=True)
        await self.send_body(b"b")
        self.seen.append(self.response_state)


async def test_the_response_state_follows_the_events_sent():
    StateRecorder.seen = []
    response = await HttpCommunicator(StateRecorder.as_asgi(), "GET", "/").get_response()
    assert response["body"] == b"ab"
    assert StateRecorder.seen == [ResponseState.NOT_STARTED, ResponseState.STARTED, ResponseState.FINISHED]
