"""Page helpers for driving the example project in a real browser: the browser tests and `make screenshots` use them.

``ExampleServer`` runs the example (examples/chat) as a subprocess with uvicorn on 127.0.0.1, on a fresh SQLite file,
and can be stopped and started again on the same port. ``launch_chromium`` starts Debian's Chromium through
Playwright (never a downloaded browser). The remaining functions are what a person does on the pages: log in, open a
room, post, wait for a message or a toast; each waits with a bounded timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import free_port

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DESKTOP",
    "EXAMPLE_DIR",
    "PASSWORD",
    "ExampleServer",
    "chromium_missing",
    "chromium_session",
    "guest_page",
    "launch_chromium",
    "log_in",
    "open_room",
    "post",
    "wait_for_message",
    "wait_live",
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "examples" / "chat"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: The password of the users the helpers create.
PASSWORD = "browser-test-pw"
#: Default wait for anything on a page, in milliseconds.
TIMEOUT_MS = 5000


def chromium_missing() -> str | None:
    """Why browser tests cannot run here (Chromium or Playwright missing), or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    return None


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)


def chromium_session() -> Iterator[Any]:
    """Generator behind the test modules' ``browser`` fixtures: Playwright and Chromium for the module's tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@dataclass
class ExampleServer:
    """The example project served by uvicorn in a subprocess, with its own SQLite file in ``workdir``.

    With ``layer="redis"`` it runs like ``make demo-redis``: ``workers`` uvicorn processes and ``manage.py runworker
    dashboard-ticker``, talking through Redis on 127.0.0.1:6379 under a key prefix of their own.
    """

    workdir: Path
    layer: str = "memory"
    workers: int = 1
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "chatsite.settings",
                "CHAT_DATABASE": str(self.workdir / "db.sqlite3"),
                "CHAT_LAYER": self.layer,
                "CHAT_REDIS_PREFIX": f"tether-example-test-{self.port}",
                "CHAT_RECONNECT_MAX_MS": "1500",
                "PYTHONPATH": str(EXAMPLE_DIR),
            }
        )
        env.pop("TETHER_TEST_DB", None)
        env.update(self.extra_env)
        return env

    def manage(self, *args: str) -> str:
        """Run ``manage.py`` with the server's settings; returns its output, raises with it on failure."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLE_DIR,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def prepare(self, *usernames: str) -> None:
        """Create the database and users with ``PASSWORD``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.manage("migrate", "--verbosity", "0")
        if usernames:
            self.manage("demo_users", *usernames, "--password", PASSWORD)

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            process = subprocess.Popen(command, cwd=EXAMPLE_DIR, env=self.env(), stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def start(self, timeout: float = 20) -> None:
        """Start uvicorn (and the dashboard worker with Redis) and wait until it answers HTTP."""
        command = [sys.executable, "-m", "uvicorn", "chatsite.asgi:application", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--log-level", "warning"]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        web = self._spawn(command)
        if self.layer == "redis":
            self._spawn([sys.executable, "manage.py", "runworker", "dashboard-ticker"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if web.poll() is not None:
                self.stop()
                raise RuntimeError(f"The example server exited with {web.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"The example server did not answer on {self.url} within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        """Stop every process (gracefully, then for good after 10 seconds)."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes = []

    def output(self) -> str:
        """What the server logged (the end of it)."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


#: The window of a desktop browser, which the pages are given unless a test asks for a phone's.
DESKTOP = {"width": 1280, "height": 800}


def log_in(
    browser: Any,
    server: ExampleServer,
    username: str,
    sessions: dict[str, Any] | None = None,
    viewport: dict[str, int] = DESKTOP,
) -> Any:
    """A new browser context logged in as ``username``; returns its page, on the lobby.

    With a ``sessions`` dict, the first login of a user stores the context's cookies there and later ones reuse
    them, which saves the password hashing of a login form post.
    """
    known = sessions.get(username) if sessions is not None else None
    context = browser.new_context(viewport=viewport, storage_state=known)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    if known is not None:
        page.goto(f"{server.url}/")
        return page
    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    if sessions is not None:
        sessions[username] = context.storage_state()
    return page


def guest_page(browser: Any) -> Any:
    """A new browser context without a login; returns its page."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def wait_live(page: Any, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until the page's connection is open (the status pill says "Live")."""
    page.wait_for_selector("#connection[data-state=open]", timeout=timeout_ms)


def open_room(page: Any, server: ExampleServer, room: str) -> None:
    """Go to the room's page and wait until it has joined (its history is shown)."""
    page.goto(f"{server.url}/chat/{room}/")
    wait_live(page)
    page.wait_for_function("document.getElementById('messages-empty').textContent !== 'Loading messages…'")


def post(page: Any, text: str) -> None:
    """Type ``text`` in the composer and send it."""
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")


def wait_for_message(page: Any, text: str, timeout_ms: int = TIMEOUT_MS) -> Any:
    """The message showing exactly ``text`` (a locator of its text), once it is on the page."""
    page.wait_for_function(
        "text => [...document.querySelectorAll('.message-text')].some((node) => node.textContent === text)",
        arg=text,
        timeout=timeout_ms,
    )
    return page.locator(".message-text", has_text=text).last
