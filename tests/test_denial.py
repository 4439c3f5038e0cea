"""Refusing a WebSocket handshake with an HTTP response (tether.denial, deny(), DenyConnection, URLRouter's 404).

The live tests read the answer with a raw socket, as an HTTP client sees it: status line, headers and body.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from django.urls import path

from tether.denial import denial_messages, send_denial, supports_denial_response
from tether.exceptions import DenyConnection
from tether.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer, WebsocketConsumer
from tether.routing import ProtocolTypeRouter, URLRouter
from tether.testing import ApplicationCommunicator

#: Every wait on the network is bounded by this many seconds.
WAIT = 10

#: The granian runs serve the module's tests together: each test has its own paths and leaves nothing behind.
pytestmark = pytest.mark.granian_per_module

WITH_EXTENSION = {"type": "websocket", "path": "/", "extensions": {"websocket.http.response": {}}}


# -- the messages ------------------------------------------------------------------------------------------------


def test_supports_denial_response_reads_the_scope_extensions():
    assert supports_denial_response(WITH_EXTENSION)
    assert not supports_denial_response({"type": "websocket", "path": "/"})
    assert not supports_denial_response({"type": "websocket", "extensions": {"websocket.http.response": {}}.keys()})


def test_denial_messages_with_the_extension_are_an_http_response():
    start, body = denial_messages(WITH_EXTENSION, 429, b"slow down", {"Retry-After": "30"})
    assert start == {"type": "websocket.http.response.start", "status": 429, "headers": [(b"Retry-After", b"30")]}
    assert body == {"type": "websocket.http.response.body", "body": b"slow down"}


def test_a_str_body_is_utf8_text_unless_a_content_type_is_given():
    start, body = denial_messages(WITH_EXTENSION, 401, "connectez-vous d'abord, s'il vous plaît")
    assert (b"content-type", b"text/plain; charset=utf-8") in start["headers"]
    assert body["body"] == "connectez-vous d'abord, s'il vous plaît".encode()
    start, _ = denial_messages(WITH_EXTENSION, 401, "{}", [("Content-Type", "application/json")])
    assert start["headers"] == [(b"Content-Type", b"application/json")]


def test_without_the_extension_the_denial_is_a_plain_close(caplog):
    with caplog.at_level(logging.DEBUG, logger="tether.denial"):
        assert denial_messages({"type": "websocket", "path": "/x/"}, 401, b"no") == [{"type": "websocket.close"}]
    assert "instead of 401" in caplog.text


@pytest.mark.parametrize("status", [200, 101, 600, "401", None])
def test_a_denial_status_must_be_an_error_status(status):
    with pytest.raises(ValueError, match="use a status from 300 to 599"):
        denial_messages(WITH_EXTENSION, status)


def test_a_denial_body_must_be_bytes_or_str():
    with pytest.raises(TypeError, match="must be bytes or str, not dict"):
        denial_messages(WITH_EXTENSION, 400, {"error": "no"})  # type: ignore[arg-type]


async def test_send_denial_says_whether_the_response_was_sent():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    assert await send_denial(WITH_EXTENSION, send, 404) is True
    assert [message["type"] for message in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert await send_denial({"type": "websocket"}, send, 404) is False
    assert sent[-1] == {"type": "websocket.close"}


# -- consumers ---------------------------------------------------------------------------------------------------


class NeedsLogin(AsyncWebsocketConsumer):
    async def connect(self):
        await self.deny(401, b'{"error": "log in first"}', headers={"content-type": "application/json"})


class TooMany(AsyncJsonWebsocketConsumer):
    async def connect(self):
        raise DenyConnection(status=429, body="slow down", headers=[("retry-after", "30")])


class SyncNeedsLogin(WebsocketConsumer):
    def connect(self):
        self.deny(401, "log in first")


class PlainDeny(AsyncWebsocketConsumer):
    async def connect(self):
        raise DenyConnection


class DeniesTooLate(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.deny(403)


async def test_deny_sends_the_response_through_the_communicator():
    communicator = ApplicationCommunicator(NeedsLogin.as_asgi(), WITH_EXTENSION)
    await communicator.send_input({"type": "websocket.connect"})
    start = await communicator.receive_output()
    body = await communicator.receive_output()
    assert start["status"] == 401 and start["headers"] == [(b"content-type", b"application/json")]
    assert body["body"] == b'{"error": "log in first"}'
    await communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    await communicator.wait()


async def test_deny_after_accept_names_close():
    communicator = ApplicationCommunicator(DeniesTooLate.as_asgi(), WITH_EXTENSION)
    await communicator.send_input({"type": "websocket.connect"})
    assert (await communicator.receive_output())["type"] == "websocket.accept"
    with pytest.raises(RuntimeError, match=r"was accepted already; call close\(\)"):
        await communicator.wait()


# -- live, read by a raw HTTP client -----------------------------------------------------------------------------


async def handshake(server, route: str) -> tuple[int, dict[str, str], bytes]:
    """Open a WebSocket handshake on a raw socket; the status, headers (lower-case names) and body of the answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(server.host, server.port), WAIT)
    try:
        writer.write(
            (
                f"GET /{route} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), WAIT)
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


def without_the_extension(app):
    """The app as served by a server that lacks the denial response extension (daphne, for one)."""

    async def stripped(scope, receive, send):
        await app({**scope, "extensions": {}}, receive, send)

    return stripped


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                path("login/", NeedsLogin.as_asgi()),
                path("busy/", TooMany.as_asgi()),
                path("sync-login/", SyncNeedsLogin.as_asgi()),
                path("plain/", PlainDeny.as_asgi()),
            ]
        )
    }
)


async def test_a_raw_client_reads_the_denial_status_headers_and_body(live_serve):
    # On granian too, which offers the extension (2.8).
    server = live_serve("tests.test_denial:application")
    status, headers, body = await handshake(server, "login/")
    assert (status, headers["content-type"], body) == (401, "application/json", b'{"error": "log in first"}')
    status, headers, body = await handshake(server, "busy/")
    assert (status, headers["retry-after"], body) == (429, "30", b"slow down")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    status, _, body = await handshake(server, "sync-login/")
    assert (status, body) == (401, b"log in first")


async def test_deny_connection_without_a_status_is_still_a_plain_403(live_serve):
    status, _, body = await handshake(live_serve("tests.test_denial:application"), "plain/")
    assert (status, body) == (403, b"")


async def test_without_the_extension_deny_falls_back_to_403(serve):
    server = serve(without_the_extension(application))
    for route in ("login/", "busy/", "sync-login/"):
        status, _, body = await handshake(server, route)
        assert (status, body) == (403, b"")


async def test_an_unknown_path_is_refused_with_404_and_no_traceback(serve, caplog):
    server = serve(application)
    with caplog.at_level(logging.INFO):
        status, _, body = await handshake(server, "nowhere/")
    assert (status, body) == (404, b"URLRouter: no route matches the path 'nowhere/'.")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
