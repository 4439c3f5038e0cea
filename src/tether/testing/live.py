"""Live-server tests: the project's ASGI application served by uvicorn in a subprocess, for real clients to talk to.

``ChannelsLiveServerTestCase`` starts the server once per test class on a free port of ``127.0.0.1``, serving
``ASGI_APPLICATION`` (with static files by default), and stops it when the class is done. Tests reach it at
``live_server_url`` (HTTP) and ``live_server_ws_url`` (WebSocket) with a browser driver, ``urllib`` or the
``websockets`` client, and see the same test database, because the server process is given the settings of the test
process: the test database names, ``DEBUG``, and any ``override_settings`` active when the class starts.

The server runs in another process, so it cannot see an in-memory SQLite database (the test database must be a file)
nor the test process's in-memory channel layer: to send to the server's consumers from a test, use a layer that
processes share (Redis).

Internals: the test process binds the listening socket itself and hands it to the child, so the port is known and
free before the child starts, and no other program can take it in between. The child reads its settings as one
line on stdin, writes ``ready`` to a pipe of its own once uvicorn serves, and exits when its stdin closes, so it never
outlives the tests. What it prints goes to a file that is shown when the class ends, so a chatty view cannot block it.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test import TransactionTestCase
from django.utils.functional import classproperty

from tether.server import bind_socket, format_url

__all__ = ["ChannelsLiveServerTestCase", "LiveServerError", "refuse_in_memory_databases"]

logger = logging.getLogger("tether.testing.live")

_READY = b"ready\n"

#: Settings the server process must not take from the test process.
_NOT_MIRRORED = frozenset({"SETTINGS_MODULE"})

_CHILD_CODE = "from tether.testing.live import serve_in_child; serve_in_child()"


class LiveServerError(RuntimeError):
    """The live server process did not start; the message includes what it printed."""


def refuse_in_memory_databases(database_connections: Iterable[Any]) -> None:
    """Raise ``ImproperlyConfigured`` for an in-memory SQLite database, which a server process cannot see."""
    for connection in database_connections:
        is_in_memory = getattr(connection, "is_in_memory_db", None)
        if connection.vendor == "sqlite" and is_in_memory is not None and is_in_memory():
            raise ImproperlyConfigured(
                f"ChannelsLiveServerTestCase serves from another process, which cannot see the in-memory SQLite "
                f"test database of DATABASES[{connection.alias!r}]. Give it a file: set "
                f"DATABASES[{connection.alias!r}]['TEST'] = {{'NAME': BASE_DIR / 'test-db.sqlite3'}}."
            )


class _ServerProcess:
    """One uvicorn server in a child process, serving on a socket this process bound."""

    def __init__(self, host: str, port: int, serve_static: bool, startup_timeout: float) -> None:
        self.host = host
        self.serve_static = serve_static
        self.startup_timeout = startup_timeout
        self.sock = bind_socket(host, port, ipv6=":" in host)
        self.port: int = self.sock.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - kept open until stop()

    def start(self) -> None:
        """Start the child and wait until it serves; ``LiveServerError`` with its output when it does not."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(entry or os.getcwd() for entry in sys.path)
        fd = self.sock.fileno()
        ready_read, ready_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE],
                stdin=subprocess.PIPE,
                stdout=self._output,
                stderr=self._output,
                pass_fds=(fd, ready_write),
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(ready_write)
        # The child holds the socket now; closing ours leaves it listening there.
        self.sock.close()
        with open(ready_read, "rb", buffering=0) as ready:
            stdin = self.process.stdin
            if stdin is None:  # Popen was asked for the pipe; this only narrows the type.
                raise LiveServerError("The live server process was started without its stdin pipe.")
            try:
                stdin.write(_encode_payload(self.host, fd, ready_write, self.serve_static) + b"\n")
                stdin.flush()
            except BrokenPipeError:
                pass  # The child died at once; the ready pipe says so and its output says why.
            started = self._wait_ready(ready)
        if not started:
            try:
                what = f"exited with code {self.process.wait(timeout=1)}"
            except subprocess.TimeoutExpired:
                what = f"did not start within {self.startup_timeout}s"
            self.stop(echo=False)
            raise LiveServerError(
                f"The live server for port {self.port} {what}. Its output:\n{self._read_output() or '(nothing)'}"
            )

    def _wait_ready(self, ready: io.FileIO) -> bool:
        """True once the child reports that it serves; False when it closes the pipe first or time runs out."""
        deadline = time.monotonic() + self.startup_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([ready], [], [], remaining)
            if readable:
                return ready.read(len(_READY)) == _READY
        return False

    def stop(self, echo: bool = True) -> None:
        """Stop the child: close its stdin (it shuts down gracefully), then signal it if it lingers."""
        process = self.process
        if process is not None:
            self.process = None
            if process.stdin is not None and not process.stdin.closed:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._signal(process, signal.SIGKILL)
                    process.wait()
        if echo:
            output = self._read_output()
            if output:
                sys.stderr.write(f"Live server output:\n{output}\n")
        self.sock.close()

    def close(self) -> None:
        """Forget the server's saved output; call after ``stop()``."""
        self._output.close()

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    def _read_output(self) -> str:
        if self._output.closed:
            return ""
        self._output.seek(0)
        return self._output.read().decode(errors="replace").strip()


def _encode_payload(host: str, fd: int, ready_fd: int, serve_static: bool) -> bytes:
    """The child's instructions as one line: the settings module, every picklable setting, where and how to serve."""
    values: dict[str, bytes] = {}
    for name in dir(settings):
        if not name.isupper() or name in _NOT_MIRRORED:
            continue
        try:
            values[name] = pickle.dumps(getattr(settings, name))
        except Exception as exc:
            logger.debug("Setting %s cannot be sent to the live server (%s); it keeps its own value.", name, exc)
    payload = {
        "settings_module": getattr(settings, "SETTINGS_MODULE", None),
        "settings": values,
        "host": host,
        "fd": fd,
        "ready_fd": ready_fd,
        "serve_static": serve_static,
    }
    return base64.b64encode(pickle.dumps(payload))


def serve_in_child() -> None:
    """The live server process's entry point: configure Django as the test process is, then serve until told to stop.

    Not for direct use; ``ChannelsLiveServerTestCase`` runs it with ``python -c``.
    """
    payload = pickle.loads(base64.b64decode(sys.stdin.buffer.readline()))
    settings_module = payload["settings_module"]
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    pending: dict[str, bytes] = {}
    values: dict[str, Any] = {}
    for name, data in payload["settings"].items():
        try:
            values[name] = pickle.loads(data)
        except Exception:
            pending[name] = data  # Its value may need the app registry: try again after django.setup().
    if settings_module:
        for name, value in values.items():
            setattr(settings, name, value)
    else:
        settings.configure(**values)

    import django

    django.setup()
    for name, data in pending.items():
        try:
            setattr(settings, name, pickle.loads(data))
        except Exception as exc:
            sys.stderr.write(f"tether live server: setting {name} keeps its own value ({exc}).\n")
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, payload["host"]]
    _serve_until_stdin_closes(payload["fd"], payload["ready_fd"], payload["serve_static"])


def _serve_until_stdin_closes(fd: int, ready_fd: int, serve_static: bool) -> None:
    import asyncio

    from tether.routing import get_default_application
    from tether.server import make_server, with_static_files

    application = get_default_application()
    if serve_static:
        application = with_static_files(application)
    # A test server stops at once: no drain of the WebSockets a test left open (tether.drain).
    server = make_server(application, verbosity=0, drain=False)
    sock = socket.socket(fileno=fd)

    def stop_when_stdin_closes() -> None:
        sys.stdin.buffer.read()
        server.should_exit = True

    threading.Thread(target=stop_when_stdin_closes, name="tether-live-server-stdin", daemon=True).start()

    async def announce_when_started() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.01)
        os.write(ready_fd, _READY)
        os.close(ready_fd)

    async def main() -> None:
        announcer = asyncio.create_task(announce_when_started())
        try:
            await server.serve(sockets=[sock])
        finally:
            announcer.cancel()

    asyncio.run(main())


class ChannelsLiveServerTestCase(TransactionTestCase):
    """A ``TransactionTestCase`` with the project's ASGI application served by uvicorn for the whole class.

    Class attributes: ``host`` (default ``"127.0.0.1"``; added to the server's ALLOWED_HOSTS), ``port`` (default 0:
    a free port), ``serve_static`` (default True: answer ``STATIC_URL`` from the static files finders when
    ``django.contrib.staticfiles`` is installed) and ``startup_timeout`` (seconds). The server starts in
    ``setUpClass`` and stops in the class cleanup; ``live_server_url`` and ``live_server_ws_url`` say where it is.
    Raises ``ImproperlyConfigured`` for an in-memory SQLite test database and ``LiveServerError`` when the server
    does not start (with the server's own error output).
    """

    host: ClassVar[str] = "127.0.0.1"
    port: ClassVar[int] = 0
    serve_static: ClassVar[bool] = True
    startup_timeout: ClassVar[float] = 30.0

    _live_server: ClassVar[_ServerProcess | None] = None

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        refuse_in_memory_databases(
            connections[alias]
            for alias in connections
            # TransactionTestCase._databases_names is private Django API that django-stubs does not declare.
            if alias in cls._databases_names(include_mirrors=False)  # type: ignore[attr-defined]
        )
        server = _ServerProcess(cls.host, cls.port, cls.serve_static, cls.startup_timeout)
        cls.addClassCleanup(server.close)
        server.start()
        cls._live_server = server
        cls.addClassCleanup(cls._stop_live_server)

    @classmethod
    def _stop_live_server(cls) -> None:
        server, cls._live_server = cls._live_server, None
        if server is not None:
            server.stop()

    @classproperty
    def live_server_port(cls: type[ChannelsLiveServerTestCase]) -> int:
        """The port the live server listens on."""
        if cls._live_server is None:
            raise LiveServerError(
                f"{cls.__name__}'s live server is not running; it runs between setUpClass and its cleanup."
            )
        return cls._live_server.port

    @classproperty
    def live_server_url(cls) -> str:
        """``http://host:port`` of the live server (no trailing slash)."""
        return format_url("http", cls.host, cls.live_server_port, path="")

    @classproperty
    def live_server_ws_url(cls) -> str:
        """``ws://host:port`` of the live server (no trailing slash)."""
        return format_url("ws", cls.host, cls.live_server_port, path="")
