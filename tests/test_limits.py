"""tether.limits and the limits it sets: message size (1009), JSON nesting (1007), and the memory of idle clients.

The live tests run tether's own server helper (``tether_serve``) or a subprocess serving through ``tether.server``,
with real ``websockets`` clients over 127.0.0.1. Every wait is bounded; nothing asserts a speed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import websockets
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import path
from websockets.exceptions import ConnectionClosed

from tether.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from tether.limits import (
    DEFAULT_MAX_MESSAGE_SIZE,
    json_nesting_exceeds,
    max_message_size,
    message_size,
)
from tether.routing import ProtocolTypeRouter, URLRouter
from tether.server import make_server

#: Every wait on the network is bounded by this many seconds.
WAIT = 10
SRC_DIR = Path(__file__).resolve().parent.parent / "src"


# -- the pure functions ------------------------------------------------------------------------------------------


def test_default_max_message_size_is_one_mebibyte():
    assert max_message_size() == DEFAULT_MAX_MESSAGE_SIZE == 1024 * 1024


@override_settings(TETHER_MAX_MESSAGE_SIZE=4096)
def test_max_message_size_comes_from_the_setting():
    assert max_message_size() == 4096


@pytest.mark.parametrize("value", [0, -1, "1MB", 1.5, True, None])
def test_a_bad_max_message_size_setting_is_named(value):
    expected = "TETHER_MAX_MESSAGE_SIZE must be a positive number of bytes"
    with override_settings(TETHER_MAX_MESSAGE_SIZE=value), pytest.raises(ImproperlyConfigured, match=expected):
        max_message_size()


def test_message_size_counts_utf8_bytes_of_long_text():
    assert message_size(None, b"abc", 10) == 3
    assert message_size(None, None, 10) == 0
    assert message_size("é" * 10, None, 20) == 20  # 10 characters, 20 bytes: long enough to matter, so counted
    assert message_size("a" * 100, None, 10) == 100


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        ("[" * 65 + "]" * 65, True),
        ("[" * 64 + "]" * 64, False),
        ('{"a":' * 65 + "1" + "}" * 65, True),
        (json.dumps(["[" * 100, "{" * 100]), False),  # brackets inside strings do not nest
        (json.dumps([{"k": i} for i in range(1000)]), False),  # many brackets, two levels
        (json.dumps(['\\"[' * 100]), False),  # escaped quotes do not end the string
        ("[" * 100_000, True),  # malformed, and deep: refused before the decoder recurses
    ],
)
def test_json_nesting_exceeds(text, deeper):
    assert json_nesting_exceeds(text, 64) is deeper


# -- the server helper -------------------------------------------------------------------------------------------


async def _app(scope, receive, send):  # never called: the servers below are built, not started
    raise AssertionError


def test_server_helper_limits_messages_to_the_setting():
    assert make_server(_app).config.ws_max_size == DEFAULT_MAX_MESSAGE_SIZE
    with override_settings(TETHER_MAX_MESSAGE_SIZE=5000):
        assert make_server(_app).config.ws_max_size == 5000
    assert make_server(_app, ws_max_size=123).config.ws_max_size == 123


# -- live: size and JSON refusals --------------------------------------------------------------------------------


#: Set by ``disconnect()`` of the consumers below (the servers run in a thread of this process), so a test knows
#: when a connection's handling is over and every log line it causes has been written.
disconnected = threading.Event()


class Counting(AsyncWebsocketConsumer):
    """Answers every message with its size, so a client knows it was handled."""

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=str(len(text_data if text_data is not None else bytes_data)))

    async def disconnect(self, code):
        disconnected.set()


class SmallMessages(Counting):
    max_message_size = 1000


class JsonEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)

    async def disconnect(self, code):
        disconnected.set()


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                path("count/", Counting.as_asgi()),
                path("small/", SmallMessages.as_asgi()),
                path("json/", JsonEcho.as_asgi()),
            ]
        )
    }
)


def connect(server, route: str):
    return websockets.connect(f"{server.ws_url}/{route}", open_timeout=WAIT, close_timeout=WAIT, max_size=None)


async def closed_with(ws) -> tuple[int, str]:
    """Wait (bounded) until the server closes ``ws``; the code and reason it sent."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), WAIT)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def warnings_once_disconnected(caplog) -> list[logging.LogRecord]:
    """The WARNING-or-worse records, once the consumer's ``disconnect()`` ran (the server thread logs on its loop)."""
    assert await asyncio.to_thread(disconnected.wait, WAIT), "the consumer's disconnect() did not run"
    return [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.fixture(autouse=True)
def no_disconnect_yet():
    disconnected.clear()


async def test_a_message_over_the_project_limit_is_closed_with_1009_and_one_log_line(tether_serve, caplog):
    server = tether_serve(application)
    with caplog.at_level(logging.WARNING):
        async with connect(server, "count/") as ws:
            await ws.send("a" * DEFAULT_MAX_MESSAGE_SIZE)
            assert await asyncio.wait_for(ws.recv(), WAIT) == str(DEFAULT_MAX_MESSAGE_SIZE)
            await ws.send("a" * (DEFAULT_MAX_MESSAGE_SIZE + 1))
            code, _ = await closed_with(ws)
        records = await warnings_once_disconnected(caplog)
    assert code == 1009
    [record] = records
    assert "1009" in record.getMessage() and "Counting" in record.getMessage()


async def test_a_consumer_limit_below_the_servers_is_enforced_by_the_consumer(tether_serve, caplog):
    server = tether_serve(application)
    with caplog.at_level(logging.WARNING):
        async with connect(server, "small/") as ws:
            await ws.send("é" * 500)  # 1000 bytes of UTF-8: at the limit
            assert await asyncio.wait_for(ws.recv(), WAIT) == "500"
            await ws.send(b"x" * 1001)
            code, reason = await closed_with(ws)
        records = await warnings_once_disconnected(caplog)
    assert (code, reason) == (1009, "Message over 1000 bytes")
    [record] = records
    assert "1001 bytes, over its limit of 1000" in record.getMessage()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("[" * 65 + "]" * 65, "JSON nested deeper than 64 levels"),
        ("[" * 100_000, "JSON nested deeper than 64 levels"),
        ('{"unterminated": ', "Invalid JSON"),
    ],
    ids=["deep", "very-deep", "malformed"],
)
async def test_json_refused_with_1007_and_no_traceback(tether_serve, caplog, frame, reason):
    server = tether_serve(application)
    with caplog.at_level(logging.WARNING):
        async with connect(server, "json/") as ws:
            await ws.send('{"ok": [[1]]}')
            assert json.loads(await asyncio.wait_for(ws.recv(), WAIT)) == {"ok": [[1]]}
            await ws.send(frame)
            code, sent_reason = await closed_with(ws)
        records = await warnings_once_disconnected(caplog)
    assert code == 1007
    assert sent_reason.startswith(reason)
    [record] = records
    assert record.levelno == logging.WARNING and record.exc_info is None


# -- live: memory of idle clients --------------------------------------------------------------------------------

SERVER_SCRIPT = textwrap.dedent(
    """
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["tether"],
        CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.InMemoryChannelLayer"}},
        SECRET_KEY="not secret",
    )
    django.setup()

    from django.urls import path

    from tether.generic.websocket import AsyncWebsocketConsumer
    from tether.routing import ProtocolTypeRouter, URLRouter
    from tether.server import bind_socket, serve


    class Ack(AsyncWebsocketConsumer):
        async def receive(self, text_data=None, bytes_data=None):
            await self.send(text_data="handled")


    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    serve(ProtocolTypeRouter({"websocket": URLRouter([path("ack/", Ack.as_asgi())])}), sock, verbosity=0)
    """
)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
async def test_idle_clients_that_sent_a_maximum_size_message_keep_little_memory(tmp_path):
    """40 clients each send one text message at the limit, then idle: the server grows < 2 MB per client.

    Before the limits work, the dispatch loop kept each connection's last message (and its decoded text) alive and
    uvicorn accepted 16 MiB: 2.1 MB per client at 1 MiB, 34 MB at 16 MiB. What remains is about one message per
    idle connection inside the frame parser of the ``websockets`` library, bounded by the limit.
    """
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR), "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=subprocess.PIPE, env=env)
    clients = []
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), WAIT)
        url = f"ws://127.0.0.1:{int(line)}/ack/"
        payload = "a" * DEFAULT_MAX_MESSAGE_SIZE

        async def client():
            ws = await websockets.connect(url, open_timeout=WAIT, close_timeout=WAIT, compression=None)
            await ws.send(payload)
            assert await asyncio.wait_for(ws.recv(), WAIT) == "handled"
            return ws

        clients.append(await client())  # warms the server's allocator up with one message at the limit
        before = rss_bytes(process.pid)
        for _ in range(40):
            clients.append(await client())
        grown = rss_bytes(process.pid) - before
        assert grown < 40 * 2_000_000, f"the server grew by {grown / 40 / 1e6:.2f} MB per idle client"
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
        process.terminate()
        await asyncio.wait_for(process.wait(), WAIT)
