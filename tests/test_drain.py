"""Graceful drain (tether.drain): a stopped server closes WebSockets with 1012, a batch at a time, after their handlers.

The main tests stop real servers in subprocesses (uvicorn with ``--ws tether.drain:WebSocketProtocol``, and
``manage.py runserver --noreload``) with a signal while hundreds of clients are connected, serving
``tests.drain_app`` with ``tests.drain_settings`` (a 2-second window, an 8-second timeout, and the Redis layer when the
layer tests' Redis answers). The deadline, and the sync
consumer, are tested on tether's server helper in a thread of this process, stopped as uvicorn stops on a signal.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import websockets
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import path

from tests.conftest import free_port
from tether.checks import check_drain
from tether.drain import SERVICE_RESTART, draining_ws_protocol, enter, open_connections
from tether.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from tether.limits import drain_timeout, drain_window
from tether.routing import ProtocolTypeRouter, URLRouter
from tether.server import bind_socket, make_server

ROOT = Path(__file__).resolve().parents[1]
#: The window and timeout of tests.drain_settings.
WINDOW, TIMEOUT = 2.0, 8.0
#: Clients connected to the uvicorn process that is stopped. 200 is the fewest that fill the whole schedule a window
#: of 2 s allows (20 batches, one every 0.1 s, of at least 10 connections each): more clients only make the batches
#: bigger, as the 1,000 this test had did (20 batches of 50), and cost seconds of connecting and reconnecting.
CLIENTS = 200
#: Slack for a loaded machine on every time bound (the bounds themselves are set by the window, not by speed).
SLACK = 2.0


# Settings and their check ---------------------------------------------------------------------------------------


def test_drain_settings_have_defaults():
    assert (drain_window(), drain_timeout()) == (10.0, 20.0)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"TETHER_DRAIN_WINDOW": -1}, "TETHER_DRAIN_WINDOW"),
        ({"TETHER_DRAIN_WINDOW": "10"}, "TETHER_DRAIN_WINDOW"),
        ({"TETHER_DRAIN_TIMEOUT": 0}, "TETHER_DRAIN_TIMEOUT"),
        ({"TETHER_DRAIN_WINDOW": 30, "TETHER_DRAIN_TIMEOUT": 20}, "shorter than TETHER_DRAIN_WINDOW"),
    ],
)
def test_a_bad_drain_setting_is_named_by_the_check(overrides, named):
    with override_settings(**overrides):
        with pytest.raises(ImproperlyConfigured, match=named):
            drain_timeout()
        [error] = check_drain()
    assert error.id == "tether.E012"
    assert named in error.msg


def test_the_check_passes_a_window_of_zero():
    with override_settings(TETHER_DRAIN_WINDOW=0):
        assert check_drain() == []
        assert drain_window() == 0.0


def test_the_registry_forgets_a_loop_once_it_is_gone():
    loops = []

    async def one_connection() -> int:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        departure = enter()
        try:
            return open_connections()
        finally:
            departure.leave()

    assert asyncio.run(one_connection()) >= 1
    gc.collect()
    # The registry holds its loops weakly: the loop is freed, and no longer listed (other tests' loops may come and
    # go meanwhile, so the registry's size proves nothing).
    assert loops[0]() is None
    assert open_connections() == 0


# Real servers in subprocesses -------------------------------------------------------------------------------------


def redis_url() -> str | None:
    """The Redis server of the layer tests, when one answers: the servers then use the Redis layer."""
    url = os.environ.get("TETHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1).close()
    except OSError:
        return None
    return url


def server_env(tmp_path: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.drain_settings",
        PYTHONPATH=str(ROOT),
        TETHER_TEST_DB=str(tmp_path / "db.sqlite3"),
    )
    url = redis_url()
    if url is not None:
        env["TEST_DRAIN_REDIS_URL"] = url
    return env


async def start_uvicorn(tmp_path: Path, port: int) -> asyncio.subprocess.Process:
    """uvicorn as the deploying docs run it (one worker), serving tests.drain_app on ``port``."""
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "uvicorn", "tests.drain_app:application", "--host", "127.0.0.1", "--port", str(port)],
        *["--ws", "tether.drain:WebSocketProtocol", "--http", "tether.handshake:HTTPProtocol"],
        *["--timeout-graceful-shutdown", str(int(TIMEOUT) + 2), "--log-level", "warning"],
        env=server_env(tmp_path),
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )


async def start_runserver(tmp_path: Path, port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "django", "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"],
        env=server_env(tmp_path),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def connect(port: int) -> tuple[websockets.ClientConnection, str]:
    """A client of ``/ws/steady/`` and the pid of the process that accepted it (the consumer's first frame)."""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/steady/", compression=None, open_timeout=30)
    hello = await asyncio.wait_for(ws.recv(), 30)
    assert isinstance(hello, str) and hello.startswith("pid:")
    return ws, hello


async def wait_listening(port: int, process: asyncio.subprocess.Process) -> str:
    """Wait (at most 30 s) until the server accepts a WebSocket; the pid it reports."""
    deadline = time.monotonic() + 30
    while True:
        assert process.returncode is None, "the server exited while starting"
        try:
            ws, hello = await connect(port)
        except (OSError, websockets.InvalidHandshake, asyncio.TimeoutError):
            assert time.monotonic() < deadline, f"nothing listens on port {port} after 30 s"
            await asyncio.sleep(0.1)
            continue
        await ws.close()
        return hello


async def connect_many(port: int, count: int) -> list[websockets.ClientConnection]:
    gate = asyncio.Semaphore(100)  # at most 100 handshakes in flight, as a crowd of browsers would be

    async def one() -> websockets.ClientConnection:
        async with gate:
            ws, _ = await connect(port)
            return ws

    return await asyncio.gather(*(one() for _ in range(count)))


async def stop_and_watch(
    process: asyncio.subprocess.Process,
    clients: list[websockets.ClientConnection],
    sig: int,
    reconnect_port: int | None = None,
) -> tuple[list[tuple[float, int | None, list[str], str | None]], bytes]:
    """Send ``sig`` and follow every client to its close: (seconds after the signal, close code, frames received,
    and the ``pid:`` greeting of the server it reconnected to on ``reconnect_port`` after a 1012, if given)."""

    async def watch(ws: websockets.ClientConnection) -> tuple[float, int | None, list[str], str | None]:
        frames = []
        try:
            async for frame in ws:
                frames.append(str(frame))
        except websockets.ConnectionClosed:
            pass
        elapsed = time.monotonic() - signalled
        greeting = None
        if reconnect_port is not None and ws.close_code == SERVICE_RESTART:
            again, greeting = await connect(reconnect_port)
            await again.close()
        return elapsed, ws.close_code, frames, greeting

    signalled = time.monotonic()
    process.send_signal(sig)
    closes = await asyncio.wait_for(asyncio.gather(*(watch(ws) for ws in clients)), TIMEOUT + 20)
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    return closes, stderr


def assert_drained(closes: list[tuple[float, int | None, list[str], str | None]], work: float) -> list[float]:
    """Every client saw 1012; the last one's handler (``work`` seconds) finished first; the others were closed a
    batch at a time over the window. Returns the sorted close times of the others."""
    assert {code for _, code, _, _ in closes} == {SERVICE_RESTART}
    assert closes[-1][2] == ["done"]
    assert closes[-1][0] >= work - 0.2 - 0.05
    times = sorted(elapsed for elapsed, _, _, _ in closes[:-1])
    assert times[-1] - times[0] >= WINDOW / 2
    assert times[-1] <= WINDOW + SLACK
    assert times[len(times) // 2] >= WINDOW / 4  # half of them were still open a quarter into the window
    return times


async def stop_processes(*processes: asyncio.subprocess.Process) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_uvicorn_drains_hundreds_of_clients_over_the_window_and_they_reconnect_to_the_new_process(tmp_path):
    old_port, new_port = free_port(), free_port()
    old, new = await asyncio.gather(start_uvicorn(tmp_path, old_port), start_uvicorn(tmp_path, new_port))
    try:
        old_pid, new_pid = await asyncio.gather(wait_listening(old_port, old), wait_listening(new_port, new))
        assert old_pid != new_pid
        clients = await connect_many(old_port, CLIENTS)
        work = WINDOW + 1.5  # a handler that runs past the end of the window, on the newest connection (last turn)
        await clients[-1].send(f"work:{work}")
        await asyncio.sleep(0.2)  # it has started

        closes, stderr = await stop_and_watch(old, clients, signal.SIGTERM, reconnect_port=new_port)

        times = assert_drained(closes, work)
        print(f"{CLIENTS} clients: first 1012 after {times[0]:.2f} s, last after {times[-1]:.2f} s")
        assert [greeting for _, _, _, greeting in closes] == [new_pid] * CLIENTS
        log = stderr.decode()
        assert f"Draining {CLIENTS} WebSocket connection(s)" in log
        assert "Closed the channel layer 'default'." in log
        assert "Traceback" not in log and "Task was destroyed" not in log and "Unclosed" not in log
    finally:
        await stop_processes(old, new)


async def test_runserver_drains_on_sigint(tmp_path):
    port = free_port()
    server = await start_runserver(tmp_path, port)
    try:
        await wait_listening(port, server)
        clients = await connect_many(port, 50)
        work = WINDOW + 0.5
        await clients[-1].send(f"work:{work}")
        await asyncio.sleep(0.2)

        closes, stderr = await stop_and_watch(server, clients, signal.SIGINT)

        assert_drained(closes, work)
        log = stderr.decode()
        assert "Draining 50 WebSocket connection(s)" in log
        assert "Closed the channel layer 'default'." in log
        assert server.returncode == 0
    finally:
        await stop_processes(server)


# tether's server helper in a thread of this process ------------------------------------------------------------------

#: What the consumers below saw, for the tests to read.
EVENTS: list[str] = []


class Stubborn(AsyncWebsocketConsumer):
    """Its handler runs far past any deadline, unless it is cancelled."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            EVENTS.append("cancelled")
            raise


class SyncWorker(WebsocketConsumer):
    """A sync consumer whose handler works half a second, then answers."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        time.sleep(0.5)
        self.send(text_data="done")

    def disconnect(self, code: int) -> None:
        EVENTS.append(f"disconnect {code}")


APP = ProtocolTypeRouter(
    {"websocket": URLRouter([path("stubborn/", Stubborn.as_asgi()), path("sync/", SyncWorker.as_asgi())])}
)


@pytest.fixture
def helper_server():
    """tether's server helper with a 0.2 s window and a 1 s timeout, run in a thread; ``stop()`` does what uvicorn's
    signal handler does (``should_exit``), then waits for the server to finish."""
    EVENTS.clear()
    with override_settings(TETHER_DRAIN_WINDOW=0.2, TETHER_DRAIN_TIMEOUT=1.0):
        sock = bind_socket("127.0.0.1", 0)
        server = make_server(APP, verbosity=0)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)

        async def stop() -> None:
            server.should_exit = True
            await asyncio.to_thread(thread.join, 10)
            assert not thread.is_alive()

        yield f"ws://127.0.0.1:{sock.getsockname()[1]}", stop
        server.should_exit = True
        thread.join(10)


def test_the_server_helper_drains_with_tethers_protocol_and_waits_longer_than_the_drain():
    with override_settings(TETHER_DRAIN_TIMEOUT=12):
        server = make_server(APP, verbosity=0)
    server.config.load()
    assert server.config.ws_protocol_class is draining_ws_protocol(server.config.ws_protocol_class.__mro__[1])
    # The lighter websockets-sansio protocol (tether.wsprotocol), draining.
    assert [cls.__name__ for cls in server.config.ws_protocol_class.__mro__[1:3]] == [
        "LeanWebSocketsSansIOProtocol",
        "WebSocketsSansIOProtocol",
    ]
    assert server.config.timeout_graceful_shutdown == 14


def test_the_server_helper_can_keep_uvicorns_own_stop_for_test_servers():
    server = make_server(APP, verbosity=0, drain=False)
    server.config.load()
    assert server.config.ws_protocol_class.__name__ == "LeanWebSocketsSansIOProtocol"  # not draining
    assert server.config.timeout_graceful_shutdown is None


async def test_a_handler_past_the_timeout_is_cancelled_at_the_timeout(helper_server, caplog):
    url, stop = helper_server
    ws = await websockets.connect(f"{url}/stubborn/")
    await ws.send("work")
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await stop()
    elapsed = time.monotonic() - started
    # The close code is the client's once it has seen the end of the connection, which may come after stop() returns.
    await asyncio.wait_for(ws.wait_closed(), SLACK)
    assert ws.close_code == SERVICE_RESTART
    assert EVENTS == ["cancelled"]
    assert 1.0 <= elapsed <= 1.0 + SLACK + 1  # the timeout, then uvicorn's own last steps
    assert "1 WebSocket connection(s) still open 1 s after the server was told to stop" in caplog.text
    assert open_connections() == 0


async def test_a_sync_consumer_finishes_its_handler_then_closes_with_1012(helper_server):
    url, stop = helper_server
    ws = await websockets.connect(f"{url}/sync/")
    await ws.send("work")
    await asyncio.sleep(0.1)
    await stop()
    assert await ws.recv() == "done"
    with pytest.raises(websockets.ConnectionClosed):
        await ws.recv()
    assert ws.close_code == SERVICE_RESTART
    assert EVENTS == ["disconnect 1012"]
