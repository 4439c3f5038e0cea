"""Tokens in query strings stay out of the server's log: the filter's rules, tether's own server (``make_server``,
which runserver and the live server use), and the documented production command (uvicorn with ``asgi.py`` calling
``redact_tokens_in_access_log()``), each serving real HTTP requests and WebSocket handshakes."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.asgi import application
from tether.access_log import SERVER_LOGGERS, TokenRedactingFilter, redact_tokens_in_access_log
from tether.server import bind_socket, make_server

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "eyJ1Ijo0Mn0.1a2b3c.SECRET-signature_part"


@pytest.fixture(autouse=True)
def no_redacting_filter_left_behind() -> Iterator[None]:
    """Each test installs the filter itself; none stays on uvicorn's loggers for the tests after it."""
    yield
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for item in [item for item in logger.filters if isinstance(item, TokenRedactingFilter)]:
            logger.removeFilter(item)


def redacted(text: str, params: tuple[str, ...] = ("token",)) -> str:
    return TokenRedactingFilter(params).redact(text)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/ws/feed/?token=abc", "/ws/feed/?token=[redacted]"),
        ("/ws/feed/?room=1&token=abc&x=2", "/ws/feed/?room=1&token=[redacted]&x=2"),
        ("/ws/feed/?token=a&token=b", "/ws/feed/?token=[redacted]&token=[redacted]"),
        ("/ws/feed/?%74oken=abc", "/ws/feed/?%74oken=[redacted]"),  # the middleware decodes the name too
        ('/ws/?token=abc"def#ghi&x=1', "/ws/?token=[redacted]&x=1"),  # quotes and '#' do not cut the value short
        ("/ws/feed/?tokens=abc&mytoken=def", "/ws/feed/?tokens=abc&mytoken=def"),
        ("/ws/feed/?token=", "/ws/feed/?token="),
        ("/ws/feed/", "/ws/feed/"),
        ('127.0.0.1:5 - "GET /a/?token=abc HTTP/1.1" 200', '127.0.0.1:5 - "GET /a/?token=[redacted] HTTP/1.1" 200'),
    ],
)
def test_the_value_of_a_token_parameter_is_redacted(line, expected):
    assert redacted(line) == expected


def test_other_parameter_names_are_redacted_when_asked():
    assert redacted("/ws/?key=abc&token=def", ("key",)) == "/ws/?key=[redacted]&token=def"


def test_a_scope_logged_whole_has_its_query_string_redacted():
    scope = {"type": "websocket", "query_string": b"room=1&token=abc"}
    record = logging.LogRecord("uvicorn.asgi", 5, __file__, 1, "%s [%d] Started scope=%s", ("ASGI", 1, scope), None)
    TokenRedactingFilter().filter(record)
    assert record.getMessage().endswith("'query_string': b'room=1&token=[redacted]'}")
    assert scope["query_string"] == b"room=1&token=abc"  # the application's scope is left alone


def test_installing_twice_adds_parameter_names_and_keeps_one_filter_per_logger():
    redact_tokens_in_access_log(["key"])
    redact_tokens_in_access_log()
    for name in SERVER_LOGGERS:
        [installed] = [item for item in logging.getLogger(name).filters if isinstance(item, TokenRedactingFilter)]
        assert installed.params == {"key", "token"}


class Capture(logging.Handler):
    """The formatted messages of the records that reach a logger's handlers, so after its filters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


async def test_tethers_server_redacts_tokens_from_request_and_handshake_lines():
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(application, verbosity=2)  # 2 logs the WebSocket handshake lines as well
    capture = Capture()
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(capture)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        assert await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/?token={TOKEN}&page=2") == 200
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/?token={TOKEN}", open_timeout=10) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 10) == "hi"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()
        for logger in loggers:
            logger.removeHandler(capture)
    lines = "\n".join(capture.messages)
    assert TOKEN not in lines
    assert re.search(r'"GET /\?token=\[redacted\]&page=2 HTTP/1.1" 200', lines), lines
    assert re.search(r'"WebSocket /ws/echo/\?token=\[redacted\]" \[accepted\]', lines), lines


def test_the_documented_production_command_redacts_tokens(tmp_path):
    """``uvicorn mysite.asgi:application`` whose asgi.py calls redact_tokens_in_access_log(), as deploying.md says."""
    output = tmp_path / "uvicorn.log"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "uvicorn", "tests.redacting_asgi:application", "--host", "127.0.0.1"]
    command += ["--port", "0"]
    with output.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None:
            assert time.monotonic() < deadline and process.poll() is None, output.read_text()
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", output.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        assert _get(f"http://127.0.0.1:{port}/?token={TOKEN}") == 200
        asyncio.run(_handshake(f"ws://127.0.0.1:{port}/ws/echo/?token={TOKEN}"))
    finally:
        process.terminate()
        process.wait(timeout=20)
    text = output.read_text()
    assert TOKEN not in text
    assert '"GET /?token=[redacted] HTTP/1.1" 200' in text, text
    assert '"WebSocket /ws/echo/?token=[redacted]" [accepted]' in text, text


async def _handshake(url: str) -> None:
    async with websockets.connect(url, open_timeout=10):
        pass
