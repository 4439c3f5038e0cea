"""Run the test project's manage.py commands as real subprocesses: copy the project, start, read output, kill.

Every command runs in a fresh copy of the project (so databases, edits and ``__pycache__`` stay out of the
repository), with the interpreter running the tests and ``PYTHONPATH`` holding tether's sources and the copy. Each
process starts in its own session, and ``stop()`` kills the whole process group, the autoreloader's child included.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import tether

PROJECT_DIR = Path(__file__).resolve().parent
SRC_DIR = Path(tether.__file__).resolve().parent.parent


def copy_project(destination: Path) -> Path:
    """A copy of the test project in ``destination`` (created), without caches or databases."""
    shutil.copytree(
        PROJECT_DIR,
        destination,
        ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "harness.py", "__init__.py"),
        dirs_exist_ok=True,
    )
    # The inner package keeps its __init__.py; only the outer one (which makes this directory a tests package) goes.
    (destination / "project" / "__init__.py").write_text('"""The test project."""\n')
    return destination


def project_env(project_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for a command in ``project_dir``: tether importable, unbuffered output, ``extra`` added."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "PROJECT_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(SRC_DIR), str(project_dir)]),
        DJANGO_SETTINGS_MODULE="project.settings",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


class Command:
    """A running ``manage.py`` command whose combined output is collected line by line in a thread.

    As a context manager it stops the command (and whatever it started) on the way out.

    ``program`` is what the interpreter runs before ``args``: ``("manage.py",)``, or ``("-m", "django")`` to run
    ``django-admin`` with the ``DJANGO_SETTINGS_MODULE`` of the environment.
    """

    def __init__(self, project_dir: Path, *args: str, program: tuple[str, ...] = ("manage.py",), **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *program, *args],
            cwd=project_dir,
            env=project_env(project_dir, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        #: Where a server command listens (``host:port``), when its starter says (``uvicorn_processes``).
        self.host = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 20) -> str:
        """The first output line containing ``text``; fails with the output so far when it does not come in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} did not appear in the output of {self.process.args}:\n{self.output}")

    def wait(self, timeout: float = 20) -> int:
        """Wait for the command to exit on its own; its exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the command's main process only."""
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self) -> None:
        """Kill the command and every process it started (nothing to do for one that has exited)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Command:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_command(
    project_dir: Path, *args: str, timeout: float = 60, program: tuple[str, ...] = ("manage.py",), **env: str
) -> tuple[int, str]:
    """Run a ``manage.py`` command to completion; its exit code and combined output."""
    with Command(project_dir, *args, program=program, **env) as command:
        return command.wait(timeout=timeout), command.output


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """Status and body text of a GET to ``url``, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (in parentheses) may contain spaces; the parent pid is the second field after it.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry.name))
    return children


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand 3xx answers back to the caller instead of following them, so a test can assert the redirect."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Visitor:
    """A browser without JavaScript for a served project: keeps cookies, sends forms with their CSRF token.

    ``get`` and ``post`` return the status and body text, error statuses and redirects included (never followed).
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect)

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self._opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.base_url + path))

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        data = urllib.parse.urlencode(fields).encode()
        return self._open(urllib.request.Request(self.base_url + path, data=data, method="POST"))

    def cookie(self, name: str) -> str | None:
        return next((cookie.value for cookie in self.cookies if cookie.name == name), None)


def csrf_token_in(html: str) -> str:
    """The value of the ``csrfmiddlewaretoken`` field that ``{% csrf_token %}`` put in a page."""
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, f"No CSRF token in the page:\n{html}"
    return match[1]


@contextlib.contextmanager
def uvicorn_processes(
    project_dir: Path, envs: list[dict[str, str]], *options: str, app: str = "project.asgi:application"
) -> Iterator[list[Command]]:
    """One uvicorn process of ``app`` in ``project_dir`` per environment of ``envs``, each on a free port of 127.0.0.1
    (``Command.host``) with ``options``; yields them once all serve, and stops them all on the way out."""
    from tests.conftest import free_port

    with contextlib.ExitStack() as stack:
        commands: list[Command] = []
        for env in envs:
            port = free_port()
            arguments = (app, "--host", "127.0.0.1", "--port", str(port), *options)
            command = stack.enter_context(Command(project_dir, *arguments, program=("-m", "uvicorn"), **env))
            command.host = f"127.0.0.1:{port}"
            commands.append(command)
        for command in commands:
            command.wait_for_line("Uvicorn running on", timeout=60)
        yield commands


async def delete_redis_prefix(url: str, prefix: str) -> None:
    """Delete what the test project's processes left in the Redis at ``url`` under the key prefix ``prefix``."""
    from tether.layers.redis import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[url], prefix=prefix)
    try:
        await layer.flush()
    finally:
        await layer.close()
