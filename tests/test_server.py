"""tether.server: binding the socket, the static files wrapper, uvicorn serving HTTP, static files and WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator

import pytest
import websockets
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.test import override_settings

from tests.asgi import application
from tether.server import (
    UvicornNotInstalled,
    bind_socket,
    format_url,
    make_server,
    require_uvicorn,
    with_static_files,
)


def test_bind_socket_with_port_zero_listens_on_a_port_the_os_picked():
    sock = bind_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        sock.close()


def test_bind_socket_on_a_port_in_use_says_so():
    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="That port is already in use") as caught:
            bind_socket("127.0.0.1", taken.getsockname()[1])
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        taken.close()


def test_bind_socket_refuses_a_port_out_of_range():
    with pytest.raises(OSError, match="Port 70000 is out of range"):
        bind_socket("127.0.0.1", 70000)


def test_bind_socket_listens_on_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        sock = bind_socket("::1", 0, ipv6=True)
    except OSError as exc:
        pytest.skip(f"::1 is not available here: {exc}")
    try:
        assert sock.family == socket.AF_INET6
        with socket.create_connection(("::1", sock.getsockname()[1]), timeout=2):
            pass
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/"),
        ("::1", "http://[::1]:8000/"),
        ("0", "http://0.0.0.0:8000/"),
        ("localhost", "http://localhost:8000/"),
    ],
)
def test_format_url_brackets_ipv6_and_expands_zero(host, url):
    assert format_url("http", host, 8000) == url


def test_format_url_with_an_empty_path_has_no_trailing_slash():
    assert format_url("ws", "::1", 8000, path="") == "ws://[::1]:8000"


def test_with_static_files_wraps_the_application_when_staticfiles_is_installed():
    wrapped = with_static_files(application)
    assert isinstance(wrapped, ASGIStaticFilesHandler)
    assert wrapped.application is application


@override_settings(INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "tether"])
def test_with_static_files_leaves_the_application_alone_without_staticfiles():
    assert with_static_files(application) is application


def test_require_uvicorn_names_the_install_command_when_uvicorn_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what Python does for a module that cannot be imported
    with pytest.raises(UvicornNotInstalled, match=r'pip install -e "\.\[server\]" in a clone of tether'):
        require_uvicorn()


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@contextlib.asynccontextmanager
async def serving(app) -> AsyncIterator[int]:
    """``make_server(app)`` serving on a port of 127.0.0.1 (yielded) until the block ends."""
    sock = bind_socket("127.0.0.1", 0)
    server = make_server(app, verbosity=0)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


async def test_server_serves_pages_static_files_and_websockets_on_the_bound_socket(tmp_path):
    (tmp_path / "note.txt").write_text("static note")
    with override_settings(STATICFILES_DIRS=[str(tmp_path)]):
        async with serving(with_static_files(application)) as port:
            assert await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/") == (200, b"tether test project")
            assert await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/static/note.txt") == (200, b"static note")
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/") as ws:
                await ws.send("over uvicorn")
                assert await ws.recv() == "over uvicorn"


def test_the_server_offers_compression_by_default():
    assert make_server(application, verbosity=0).config.ws_per_message_deflate is True


def test_tether_ws_compression_false_turns_the_servers_compression_off():
    with override_settings(TETHER_WS_COMPRESSION=False):
        assert make_server(application, verbosity=0).config.ws_per_message_deflate is False


def test_a_tether_ws_compression_that_is_not_a_bool_is_refused_by_name():
    from django.core.exceptions import ImproperlyConfigured

    with (
        override_settings(TETHER_WS_COMPRESSION="no"),
        pytest.raises(ImproperlyConfigured, match="TETHER_WS_COMPRESSION"),
    ):
        make_server(application, verbosity=0)


async def test_a_client_asking_for_compression_gets_none_when_it_is_off():
    with override_settings(TETHER_WS_COMPRESSION=False):
        async with (
            serving(application) as port,
            websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/", compression="deflate") as ws,
        ):
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("uncompressed")
            assert await ws.recv() == "uncompressed"
