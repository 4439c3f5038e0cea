"""The test project's consumers served for real by uvicorn, driven by the ``websockets`` client over 127.0.0.1.

A representative few run on granian too (the ``live_serve`` fixture, in a subprocess): echo, JSON, a group through the
layer, the plain refusal, the subprotocol and accept headers, close codes with a reason, 1007 and the consumer's own
1009. The rest stay on uvicorn alone: 50 concurrent clients is slow, and the tests that read state of the server
(logs, recorded close codes) need it in this process.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import websockets
from django.urls import path
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from tests.asgi import application
from tests.consumers import websocket_urlpatterns
from tether.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from tether.routing import ProtocolTypeRouter, URLRouter

#: Every wait on the network is bounded by this many seconds.
WAIT = 10

#: The granian runs serve the module's tests together: each test has its own paths and leaves nothing behind.
pytestmark = pytest.mark.granian_per_module


class Exploding(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        raise RuntimeError("exploded while serving a real client")


class DisconnectRecorder(WebsocketConsumer):
    """Notes the code each client closed with in ``codes`` (the server runs in this process)."""

    codes: list[int] = []

    def disconnect(self, code):
        self.codes.append(code)


extra_application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                *websocket_urlpatterns,
                path("ws/explode/", Exploding.as_asgi()),
                path("ws/record/", DisconnectRecorder.as_asgi()),
            ]
        )
    }
)


@pytest.fixture
def server(serve):
    return serve(application)


@pytest.fixture
def any_server(live_serve):
    """The test project's application on uvicorn, then on granian."""
    return live_serve("tests.asgi:application")


#: ``extra_application`` by its import path, for ``live_serve``.
EXTRA = "tests.test_live_websocket:extra_application"


def connect(server, path: str, **kwargs):
    return websockets.connect(f"{server.ws_url}{path}", open_timeout=WAIT, close_timeout=WAIT, **kwargs)


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), WAIT)


# Echo ---------------------------------------------------------------------------------------------------------------


async def test_echo_text_frames(any_server):
    async with connect(any_server, "/ws/echo/") as ws:
        for text in ("hello", "", "ünïcödé ✓"):
            await ws.send(text)
            assert await recv(ws) == text


async def test_echo_binary_frames(server):
    async with connect(server, "/ws/echo/") as ws:
        payload = bytes(range(256)) * 4
        await ws.send(payload)
        assert await recv(ws) == payload


async def test_sync_echo(server):
    async with connect(server, "/ws/sync-echo/") as ws:
        await ws.send("through the thread executor")
        assert await recv(ws) == "through the thread executor"
        await ws.send(b"\x01\x02")
        assert await recv(ws) == b"\x01\x02"


async def test_json_echo(any_server):
    async with connect(any_server, "/ws/json-echo/") as ws:
        await ws.send(json.dumps({"n": [1, 2, 3]}))
        assert json.loads(await recv(ws)) == {"echo": {"n": [1, 2, 3]}}


async def test_fifty_concurrent_clients_each_echo_twenty_messages(server):
    async def client(number: int) -> list[str]:
        async with connect(server, "/ws/echo/") as ws:
            replies = []
            for index in range(20):
                await ws.send(f"{number}:{index}")
                replies.append(await recv(ws))
            return replies

    results = await asyncio.wait_for(asyncio.gather(*(client(number) for number in range(50))), 60)
    for number, replies in enumerate(results):
        assert replies == [f"{number}:{index}" for index in range(20)]


# Groups -------------------------------------------------------------------------------------------------------------


async def test_room_broadcast_reaches_all_three_clients(any_server):
    async with (
        connect(any_server, "/ws/room/lobby/") as alice,
        connect(any_server, "/ws/room/lobby/") as bob,
        connect(any_server, "/ws/room/lobby/") as carol,
        connect(any_server, "/ws/room/elsewhere/") as outsider,
    ):
        # Make sure each client's connect() (and group_add) has run: each one posts and hears itself.
        for ws in (alice, bob, carol):
            await ws.send(json.dumps({"hello": "self"}))
        for ws in (alice, bob, carol):
            for _ in range(3):
                assert json.loads(await recv(ws)) == {"hello": "self"}
        await bob.send(json.dumps({"from": "bob", "text": "hi all"}))
        for ws in (alice, bob, carol):
            assert json.loads(await recv(ws)) == {"from": "bob", "text": "hi all"}
        with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself from Python 3.11
            await asyncio.wait_for(outsider.recv(), 0.2)


# Handshake ----------------------------------------------------------------------------------------------------------


async def test_denied_connection_gets_http_403(live_serve):
    server = live_serve(EXTRA)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server, "/ws/gate/"):
            pass
    assert refused.value.response.status_code == 403


async def test_subprotocol_is_negotiated_and_accept_headers_reach_the_client(live_serve):
    server = live_serve(EXTRA)
    async with connect(server, "/ws/gate/?token=letmein", subprotocols=["tether.v1", "tether.v2"]) as ws:
        assert ws.subprotocol == "tether.v2"
        if server.kind == "granian":
            # granian (2.8) sends only its own handshake headers: the ones given to websocket.accept are dropped.
            assert "x-tether-gate" not in ws.response.headers
        else:
            assert ws.response.headers["x-tether-gate"] == "open"


async def test_no_subprotocol_when_the_client_offers_none_the_server_knows(serve):
    server = serve(extra_application)
    async with connect(server, "/ws/gate/?token=letmein", subprotocols=["other"]) as ws:
        assert ws.subprotocol is None


# Closing ------------------------------------------------------------------------------------------------------------


async def test_client_sees_the_application_close_code_and_reason(live_serve):
    server = live_serve(EXTRA)
    async with connect(server, "/ws/close/") as ws:
        await ws.send("4001 go away")
        with pytest.raises(ConnectionClosedError) as closed:
            await recv(ws)
    assert closed.value.rcvd.code == 4001
    assert closed.value.rcvd.reason == "go away"


async def test_client_sees_a_normal_close(serve):
    server = serve(extra_application)
    async with connect(server, "/ws/close/") as ws:
        await ws.send("1000")
        with pytest.raises(ConnectionClosedOK) as closed:
            await recv(ws)
    assert closed.value.rcvd.code == 1000


async def test_invalid_json_closes_with_1007(any_server):
    async with connect(any_server, "/ws/json-echo/") as ws:
        await ws.send("{broken")
        with pytest.raises(ConnectionClosedError) as closed:
            await recv(ws)
    assert closed.value.rcvd.code == 1007
    assert closed.value.rcvd.reason.startswith("Invalid JSON")


async def test_binary_frame_to_a_json_consumer_closes_with_1003(server):
    async with connect(server, "/ws/json-echo/") as ws:
        await ws.send(b"{}")
        with pytest.raises(ConnectionClosedError) as closed:
            await recv(ws)
    assert closed.value.rcvd.code == 1003


async def test_handler_exception_is_logged_and_the_connection_drops(serve, caplog):
    server = serve(extra_application)
    with caplog.at_level(logging.ERROR, logger="tether.consumer"):
        async with connect(server, "/ws/explode/") as ws:
            await ws.send("boom")
            with pytest.raises(ConnectionClosedError) as closed:
                await recv(ws)
    assert closed.value.rcvd is None  # uvicorn closes the socket without a close frame: 1006 for the client
    assert ws.close_code == 1006
    [record] = [r for r in caplog.records if r.name == "tether.consumer"]
    assert "tests.test_live_websocket.Exploding" in record.getMessage()
    assert "'websocket.receive'" in record.getMessage()


async def test_consumer_disconnect_gets_the_clients_close_code(serve):
    server = serve(extra_application)
    DisconnectRecorder.codes.clear()
    async with connect(server, "/ws/record/") as ws:
        await ws.close(code=4005, reason="done here")
    for _ in range(200):  # bounded: the server thread handles the close on its own loop
        if DisconnectRecorder.codes:
            break
        await asyncio.sleep(0.01)
    assert DisconnectRecorder.codes == [4005]


async def test_a_message_over_the_project_limit_is_closed_with_1009_by_the_consumer(any_server):
    # Plain uvicorn here and granian alike accept far larger frames (16 MiB, granian's 16 MiB frame limit): the
    # consumer's own check of TETHER_MAX_MESSAGE_SIZE (1 MiB) is what refuses it, whatever the server.
    async with connect(any_server, "/ws/echo/", max_size=None) as ws:
        await ws.send(b"x" * (1024 * 1024 + 1))
        with pytest.raises(ConnectionClosedError) as closed:
            await recv(ws)
    assert closed.value.rcvd.code == 1009
