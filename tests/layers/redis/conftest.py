"""Redis servers the Redis layer tests start themselves: extra instances, a Sentinel set, a 3-master cluster.

Every server runs ``/usr/bin/redis-server`` on a free port of 127.0.0.1 without persistence, in a temporary directory,
and is stopped when its fixture ends. The shared Redis on 6379 is only ever used through a key prefix of the test's
own (``layer_on``), never stopped or flushed.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.layers.conftest import REDIS_URL

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that waits on purpose (seconds), kept in the default run")


def free_port(bus: bool = False) -> int:
    """A free TCP port on 127.0.0.1; with ``bus``, one whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """One ``redis-server`` process on a fixed port; it can be killed and started again on the same port."""

    def __init__(self, directory: Path, port: int, *args: str, sentinel: bool = False) -> None:
        self.directory = directory
        self.port = port
        self.args = list(args)
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        if self.sentinel:
            config = self.directory / f"sentinel-{self.port}.conf"
            command = [REDIS_SERVER, str(config), "--sentinel"]
        else:
            command = [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--dbfilename",
                f"dump-{self.port}.rdb",
                *self.args,
            ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.client().ping(), 10, f"redis-server on port {self.port}")
        return self

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


class RedisServers:
    """Starts servers on free ports in one temporary directory and stops them all at the end."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tether-redis-"))
        self.servers: list[RedisServer] = []

    def start(self, *args: str, port: int | None = None) -> RedisServer:
        server = RedisServer(self.directory, port or free_port(), *args).start()
        self.servers.append(server)
        return server

    def start_sentinel(self, master: RedisServer, master_name: str = "tether-master") -> RedisServer:
        port = free_port()
        (self.directory / f"sentinel-{port}.conf").write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {master_name} 400\n"
            f"sentinel failover-timeout {master_name} 2000\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )
        server = RedisServer(self.directory, port, sentinel=True).start()
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def redis_servers() -> Iterator[RedisServers]:
    """Start extra ``redis-server`` processes for one test: ``redis_servers.start()``."""
    servers = RedisServers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[list[RedisServer]]:
    """A 3-master Redis Cluster (no replicas) made with ``redis-cli --cluster create``; yields its nodes."""
    servers = RedisServers()
    try:
        nodes = [
            servers.start(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "2000",
                port=port,
            )
            for port in (free_port(bus=True) for _ in range(3))
        ]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in nodes), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        for node in nodes:
            wait_until(
                lambda node=node: node.client().cluster("info")["cluster_state"] == "ok",
                20,
                f"cluster node {node.port} to be ready",
            )
        yield nodes
    finally:
        servers.stop_all()


def new_prefix() -> str:
    return f"tether-test-{secrets.token_hex(6)}"


@contextlib.asynccontextmanager
async def layer_on(layer_class: type, **options: Any) -> AsyncIterator[Any]:
    """A layer on the shared Redis (unless ``hosts`` is given) with a prefix of its own, flushed and closed after."""
    options.setdefault("hosts", [REDIS_URL])
    options.setdefault("prefix", new_prefix())
    layer = layer_class(**options)
    try:
        yield layer
    finally:
        with contextlib.suppress(Exception):
            await layer.flush()
        await layer.close()


@contextlib.asynccontextmanager
async def processes_on(layer_class: type, count: int = 2, **options: Any) -> AsyncIterator[list[Any]]:
    """``count`` layers sharing one prefix, standing for that many processes of one project (each its own client id,
    inbox and receive loop); flushed and closed after."""
    options.setdefault("prefix", new_prefix())
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(layer_on(layer_class, **options)) for _ in range(count)]


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    """A plain redis-py client on the shared Redis, for looking at what the layer stored."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        client.close()
