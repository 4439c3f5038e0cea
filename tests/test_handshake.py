"""Keepalive pings and the handshake deadline of tether's server helper, seen by raw sockets over 127.0.0.1.

The servers run with short times (fractions of a second) set through the settings; every wait is bounded by
``WAIT``, and no test asserts how fast something happened, only that it did.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading

import websockets
from django.test import override_settings
from django.urls import path
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tether.generic.websocket import AsyncWebsocketConsumer
from tether.handshake import keepalive_ws_protocol, with_handshake_deadline
from tether.routing import ProtocolTypeRouter, URLRouter
from tether.server import make_server

#: Every wait on the network is bounded by this many seconds.
WAIT = 10
UPGRADE = (
    "GET /{route} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_auto_picks_the_implementation_that_pings():
    assert keepalive_ws_protocol("auto") == "websockets-sansio"
    assert keepalive_ws_protocol("websockets") == "websockets"


def test_wsproto_is_kept_with_a_warning_that_it_sends_no_pings(caplog):
    with caplog.at_level(logging.WARNING, logger="tether.handshake"):
        assert keepalive_ws_protocol("wsproto") == "wsproto"
    assert "sends no keepalive pings" in caplog.text


async def _app(scope, receive, send):  # never called: the servers below are built, not started
    raise AssertionError


@override_settings(TETHER_WS_PING_INTERVAL=7, TETHER_WS_PING_TIMEOUT=3.5, TETHER_HANDSHAKE_TIMEOUT=2)
def test_server_helper_applies_the_keepalive_and_handshake_settings():
    config = make_server(_app).config
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (7.0, 3.5)
    # websockets-sansio, which pings, in its draining subclass (tether.drain).
    assert issubclass(config.ws, WebSocketsSansIOProtocol)
    assert issubclass(config.http, AutoHTTPProtocol)


def test_server_helper_defaults_are_uvicorns_ping_times():
    config = make_server(_app).config
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (20.0, 20.0)


def test_a_ready_protocol_class_for_the_uvicorn_command_line():
    from uvicorn.importer import import_from_string

    protocol = import_from_string("tether.handshake:HTTPProtocol")  # as `uvicorn --http tether.handshake:HTTPProtocol`
    assert issubclass(protocol, AutoHTTPProtocol)
    assert import_from_string("tether.handshake:HTTPProtocol") is protocol


def test_the_deadline_wraps_the_protocol_class_it_is_given():
    wrapped = with_handshake_deadline(AutoHTTPProtocol, 1.0)
    assert issubclass(wrapped, AutoHTTPProtocol)
    assert wrapped.__name__ == f"HandshakeDeadline{AutoHTTPProtocol.__name__}"


# -- live --------------------------------------------------------------------------------------------------------


class Idle(AsyncWebsocketConsumer):
    """Accepts and waits; the client's own silence is what is tested."""


class NeverAnswers(AsyncWebsocketConsumer):
    """Neither accepts nor refuses: its connect() waits for good."""

    disconnected = threading.Event()

    async def connect(self):
        await asyncio.Event().wait()

    async def disconnect(self, code):
        type(self).disconnected.set()


async def slow_http(scope, receive, send):
    """An HTTP response that takes several handshake deadlines: a request being handled is never cut."""
    await receive()
    await asyncio.sleep(1)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"worth the wait"})


application = ProtocolTypeRouter(
    {
        "http": slow_http,
        "websocket": URLRouter([path("idle/", Idle.as_asgi()), path("never/", NeverAnswers.as_asgi())]),
    }
)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: its opcode and payload."""
    first, second = await asyncio.wait_for(reader.readexactly(2), WAIT)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


async def test_a_silent_client_is_pinged_then_closed_with_1011(tether_serve):
    with override_settings(TETHER_WS_PING_INTERVAL=0.2, TETHER_WS_PING_TIMEOUT=0.3):
        server = tether_serve(application)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(UPGRADE.format(route="idle/").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101")
        opcodes = []
        while not opcodes or opcodes[-1] != 0x8:  # until the close frame; the client never answers
            opcode, payload = await read_frame(reader)
            opcodes.append(opcode)
        assert opcodes[0] == 0x9  # a ping came first: the implementation really pings
        assert struct.unpack("!H", payload[:2])[0] == 1011  # "keepalive ping timeout"
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # and the connection is closed
    finally:
        writer.close()


async def test_a_client_that_answers_pings_stays_connected(tether_serve):
    with override_settings(TETHER_WS_PING_INTERVAL=0.1, TETHER_WS_PING_TIMEOUT=0.3):
        server = tether_serve(application)
    async with websockets.connect(f"{server.ws_url}/idle/", open_timeout=WAIT) as ws:
        await asyncio.sleep(1)  # several ping intervals and timeouts pass; the client library answers each ping
        await asyncio.wait_for(ws.ping(), WAIT)


async def test_half_open_request_headers_are_closed_after_the_deadline(tether_serve):
    with override_settings(TETHER_HANDSHAKE_TIMEOUT=0.2):
        server = tether_serve(application)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET /idle/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # and never the rest
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
    finally:
        writer.close()


async def test_a_websocket_the_application_never_answers_is_closed_after_the_deadline(tether_serve):
    NeverAnswers.disconnected.clear()
    with override_settings(TETHER_HANDSHAKE_TIMEOUT=0.2):
        server = tether_serve(application)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(UPGRADE.format(route="never/").encode())
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
    finally:
        writer.close()
    # The consumer learns it: its connect() is cancelled and disconnect() runs.
    assert await asyncio.to_thread(NeverAnswers.disconnected.wait, WAIT)


async def test_requests_being_handled_and_open_websockets_outlive_the_deadline(tether_serve):
    with override_settings(TETHER_HANDSHAKE_TIMEOUT=0.2):
        server = tether_serve(application)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 200") and b"worth the wait" in response
    async with websockets.connect(f"{server.ws_url}/idle/", open_timeout=WAIT) as ws:
        await asyncio.sleep(0.5)  # past the deadline
        await asyncio.wait_for(ws.ping(), WAIT)
