"""Fixtures shared by the whole suite: a real uvicorn server on a free port (or granian, in a subprocess), and channel
layer isolation."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.db import connections
from django.test import override_settings

from tether.db import has_open_connections
from tether.layers import channel_layers
from tether.server import bind_socket, format_url, make_server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with bind_socket("127.0.0.1", 0) as sock:
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """A server running an ASGI app: uvicorn in a thread of the test process, or granian in a subprocess."""

    host: str
    port: int
    kind: str = "uvicorn"

    @property
    def url(self) -> str:
        return format_url("http", self.host, self.port, path="")

    @property
    def ws_url(self) -> str:
        return format_url("ws", self.host, self.port, path="")


@pytest.fixture(autouse=True)
def fresh_channel_layers() -> Iterator[None]:
    """Every test starts with newly built channel layers, so no message or group leaks between tests."""
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture(autouse=True)
def close_connections_left_in_the_sync_thread() -> Iterator[None]:
    """Close the database connections that async ORM calls left open in asgiref's sync thread, after every test.

    pytest-django blocks database access outside marked tests, even for checking a connection that is already open,
    so a connection left there would make tether's stale-connection check fail in the next unmarked test.
    """
    yield
    if has_open_connections():
        with contextlib.suppress(concurrent.futures.TimeoutError):  # a hung sync thread is the hung test's failure
            SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


class _ServerThreads:
    """uvicorn servers run in daemon threads of the test process, each started and then stopped with the test."""

    def __init__(self) -> None:
        self.started: list[tuple[Any, threading.Thread]] = []

    def run(self, server: Any, port: int, **run_kwargs: Any) -> LiveServer:
        """Run ``server`` (a ``uvicorn.Server``) in a thread until it listens on ``port``; fail after 10 seconds."""
        thread = threading.Thread(target=server.run, kwargs=run_kwargs, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on port {port}")
            time.sleep(0.01)
        self.started.append((server, thread))
        return LiveServer("127.0.0.1", port)

    def stop_all(self) -> None:
        """Stop every server at once, then wait for each: a uvicorn takes 0.1 to 0.3 s to notice and shut down."""
        for server, _ in self.started:
            server.should_exit = True
        for _, thread in self.started:
            thread.join(timeout=10)


@pytest.fixture
def serve():
    """Start uvicorn on a free port serving the given ASGI app; stop it when the test ends.

    Usage: ``server = serve(app)`` then talk to ``server.ws_url`` with the ``websockets`` client.
    """
    import uvicorn

    threads = _ServerThreads()

    def start(app, **options) -> LiveServer:
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="auto", **options)
        return threads.run(uvicorn.Server(config), port)

    yield start
    threads.stop_all()


@pytest.fixture
def tether_serve():
    """Start an app the way tether serves it (``tether.server.make_server``, with tether's limits) on a free port.

    Usage: ``server = tether_serve(app)``; keyword arguments go to ``make_server``. Stopped when the test ends.
    """
    threads = _ServerThreads()

    def start(app, **options) -> LiveServer:
        sock = bind_socket("127.0.0.1", 0)
        return threads.run(make_server(app, verbosity=0, **options), sock.getsockname()[1], sockets=[sock])

    yield start
    threads.stop_all()


#: The servers of the ``live_serve`` fixture: uvicorn (tether's own, in a thread) and granian (in a subprocess).
LIVE_SERVERS = ("uvicorn", "granian")

#: Seconds a granian subprocess has to listen: it imports Django and the test project, slow on a loaded machine.
GRANIAN_START_TIMEOUT = 30


def _answers_a_handshake(port: int) -> bool:
    """Whether a worker answers a WebSocket handshake on ``port`` (a refusal will do) within half a second.

    granian's main process listens before its worker runs: a port that accepts is not yet a server that answers. A
    granian stopped that early once ignored SIGTERM (a 10-second teardown, then the kill); most likely its worker had
    not set its signal handlers up yet. Not seen again since the start waits for an answer.
    """
    request = (
        f"GET /tether-live-ready/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(request.encode())
            return sock.recv(16).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


class _GranianProcesses:
    """granian servers, each a subprocess of its own (granian's workers are processes), stopped with the test.

    With ``reuse``, ``run`` gives the server it already started for the same application and urlconf again (a new
    one if that process has exited, so that one test's crash does not fail the next ones).
    """

    def __init__(self, reuse: bool = False) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.serving: dict[tuple[str, str | None], tuple[LiveServer, subprocess.Popen[bytes]]] | None = (
            {} if reuse else None
        )

    def run(self, target: str, urlconf: str | None = None) -> LiveServer:
        """Serve ``module:attribute`` with granian on a free port; fail after ``GRANIAN_START_TIMEOUT`` seconds."""
        if self.serving is None:
            return self._start(target, urlconf)
        known = self.serving.get((target, urlconf))
        if known is None or known[1].poll() is not None:
            known = self.serving[(target, urlconf)] = (self._start(target, urlconf), self.started[-1])
        return known[0]

    def _start(self, target: str, urlconf: str | None) -> LiveServer:
        port = free_port()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "TETHER_LIVE_APP": target}
        if urlconf is not None:
            env["TETHER_LIVE_URLCONF"] = urlconf
        command = [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--log-level", "warning", "tests.granian_app:application",
        ]  # fmt: skip
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # A session of its own, so that a granian that does not stop is killed with its worker (a process group).
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
        self.started.append(proc)
        deadline = time.monotonic() + GRANIAN_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"granian exited with code {proc.returncode} before listening on port {port}")
            if _answers_a_handshake(port):
                return LiveServer("127.0.0.1", port, "granian")
            if time.monotonic() > deadline:
                raise RuntimeError(f"granian did not answer on port {port} within {GRANIAN_START_TIMEOUT} s")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "granian_per_module: the module's live_serve tests share one granian process per application (for tests "
        "that leave nothing in the server another test could see; a granian start costs a second or more)",
    )


@pytest.fixture(scope="module")
def granian_per_module() -> Iterator[_GranianProcesses]:
    """The granian processes of a module marked ``granian_per_module``, stopped after its last test."""
    granian = _GranianProcesses(reuse=True)
    yield granian
    granian.stop_all()


@pytest.fixture(params=LIVE_SERVERS)
def live_serve(request):
    """Start an application on uvicorn, then (the test's second run) on granian; stop it when the test ends.

    Usage: ``server = live_serve("tests.asgi:application")``: the application is named by its import path, since
    granian imports it in a process of its own. ``urlconf`` serves HTTP with another ``ROOT_URLCONF`` (for views of
    the test). uvicorn runs as the ``serve`` fixture runs it, in a thread of this process. The server's name is
    ``request.param`` (``live_server_kind`` in the test id). Use it for a representative few tests, not every live
    test: each granian start costs about a second. In a module marked ``granian_per_module`` the granian runs serve
    the module's tests together (one process per application, stopped after the module).
    """
    kind = request.param
    shared = kind == "granian" and request.node.get_closest_marker("granian_per_module") is not None
    granian = request.getfixturevalue("granian_per_module") if shared else _GranianProcesses()
    serve_uvicorn = request.getfixturevalue("serve") if kind == "uvicorn" else None
    overrides: list[override_settings] = []

    def start(target: str, urlconf: str | None = None) -> LiveServer:
        if kind == "granian":
            return granian.run(target, urlconf)
        if urlconf is not None:
            override = override_settings(ROOT_URLCONF=urlconf)
            override.enable()
            overrides.append(override)
        module, _, attribute = target.partition(":")
        return serve_uvicorn(getattr(importlib.import_module(module), attribute))

    yield start
    if not shared:
        granian.stop_all()
    for override in reversed(overrides):
        override.disable()
