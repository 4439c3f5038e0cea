"""Fixtures shared by the whole suite: a real uvicorn server on a free port, and channel layer isolation."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.db import connections

from tether.db import has_open_connections
from tether.layers import channel_layers
from tether.server import bind_socket, format_url, make_server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with bind_socket("127.0.0.1", 0) as sock:
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """A uvicorn server running an ASGI app in a thread of the test process."""

    host: str
    port: int

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
        for server, thread in self.started:
            server.should_exit = True
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
