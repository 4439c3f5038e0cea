"""The tutorial (docs/tutorial/) builds a runnable project: this test builds it page by page and runs each step.

Every code block whose first line names a file (``# chat/consumers.py``, ``{# chat/templates/chat/room.html #}``)
is written to that file, on top of what the earlier pages wrote. After each page the project must pass
``manage.py check``; after the pages with WebSockets, a real server must serve the room; the last page's tests must
pass under ``manage.py test``. The finished project is also served by ``manage.py runserver`` and used as a
browser would: log in with the login form, post over the WebSocket, log out with the room page's logout form.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.conftest import free_port
from tests.project.harness import Command, Visitor, csrf_token_in, run_command

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial"
BLOCK = re.compile(r"^```(?:python|django)\n(?:# |\{# )(?P<path>[\w/.-]+)(?: #\})?\n(?P<body>.*?)^```", re.M | re.S)
STEPS = sorted(TUTORIAL.glob("0*.md"))


def files_of(page: Path) -> dict[str, str]:
    return {match["path"]: match["body"] for match in BLOCK.finditer(page.read_text())}


#: A command of a page's shell blocks that sets the database up (``python manage.py makemigrations chat``, ``python
#: manage.py migrate``); the others start servers or ask questions.
DATABASE_COMMAND = re.compile(r"^python (manage\.py (?:makemigrations|migrate)\b.*)$", re.M)


def database_commands_of(page: Path) -> list[list[str]]:
    """The page's own ``makemigrations`` and ``migrate`` commands, in order, as arguments of ``python``."""
    return [match[1].split() for match in DATABASE_COMMAND.finditer(page.read_text())]


def clean_env() -> dict[str, str]:
    """This process's environment without the test suite's Django settings: the project uses its own."""
    return {key: value for key, value in os.environ.items() if key not in ("DJANGO_SETTINGS_MODULE", "TETHER_TEST_DB")}


def run(project: Path, *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=project, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def post_in_room(project: Path, text: str) -> list[dict]:
    """Serve the project with uvicorn, open /ws/chat/lobby/ as a guest, post ``text``; the frames it got back."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "mysite.asgi:application", "--port", str(port), "--log-level", "warning"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        return asyncio.run(talk(server, port, text))
    finally:
        server.terminate()
        server.wait(timeout=10)


async def talk(server: subprocess.Popen[bytes], port: int, text: str) -> list[dict]:
    """Connect as a guest once the server is up, post ``text``, and read until an answer to it arrives."""
    for _ in range(100):
        try:
            socket = await websockets.connect(
                f"ws://127.0.0.1:{port}/ws/chat/lobby/", origin=f"http://127.0.0.1:{port}", open_timeout=2
            )
            break
        except OSError:
            if server.poll() is not None:
                raise AssertionError(server.stdout.read().decode()) from None
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("The tutorial project's server did not start.")
    async with socket:
        return await post_and_read(socket, text)


async def post_and_read(socket: Any, text: str) -> list[dict]:
    """Post ``text`` in the room; the frames the server sends up to the answer (the room's history comes first)."""
    await socket.send(json.dumps({"type": "post", "text": text}))
    frames = []
    while not frames or frames[-1]["type"] == "history":
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), 5)))
    return frames


PASSWORD = "tutorial-password-1"
SETTINGS = {"DJANGO_SETTINGS_MODULE": "mysite.settings"}


async def post_with_cookie(port: int, session: str, text: str) -> list[dict]:
    """Open the lobby room with the session cookie ``session``, post ``text``; the frames up to the answer."""
    socket = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/chat/lobby/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={session}"},
        open_timeout=5,
    )
    async with socket:
        return await post_and_read(socket, text)


def log_in_post_and_log_out(project: Path) -> None:
    """Serve the finished project with ``runserver``; a user logs in, posts, and logs out with the page's form."""
    code, output = run_command(
        project,
        *("createsuperuser", "--noinput", "--username", "alice", "--email", "alice@example.com"),
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        **SETTINGS,
    )
    assert code == 0, output
    port = free_port()
    with Command(project, "runserver", "--noreload", f"127.0.0.1:{port}", **SETTINGS) as server:
        server.wait_for_line("quit with CONTROL-C.")
        browser = Visitor(f"http://127.0.0.1:{port}")

        status, page = browser.get("/accounts/login/?next=/chat/lobby/")
        assert status == 200, page
        fields = {"username": "alice", "password": PASSWORD, "next": "/chat/lobby/"}
        status, page = browser.post("/accounts/login/", {**fields, "csrfmiddlewaretoken": csrf_token_in(page)})
        assert status == 302, page
        session = browser.cookie("sessionid")
        assert session

        status, page = browser.get("/chat/lobby/")
        assert status == 200 and "You are alice." in page, page
        assert '<form method="post" action="/accounts/logout/">' in page
        frames = asyncio.run(post_with_cookie(port, session, "hello from alice"))
        assert frames[-1]["type"] == "message"
        assert (frames[-1]["author"], frames[-1]["text"]) == ("alice", "hello from alice")

        status, _ = browser.post("/accounts/logout/", {"csrfmiddlewaretoken": csrf_token_in(page)})
        assert status in (200, 302)
        assert browser.cookie("sessionid") is None
        status, page = browser.get("/chat/lobby/")
        assert "You are reading as a guest." in page
        # The old cookie's session is gone on the server too: its WebSocket is a guest's.
        frames = asyncio.run(post_with_cookie(port, session, "still here?"))
        assert frames[-1]["type"] == "error" and "Log in to post" in frames[-1]["message"]


def test_every_tutorial_page_has_files_to_write():
    assert [page.name for page in STEPS][:1] == ["01-project.md"]
    assert len(STEPS) == 6
    for page in STEPS:
        assert files_of(page), f"{page.name} has no code block that names its file"


def test_the_pages_that_set_the_database_up_say_which_commands_to_run():
    commands = {page.name: database_commands_of(page) for page in STEPS}
    assert commands["01-project.md"] == [["manage.py", "migrate"]]
    assert commands["04-database.md"] == [["manage.py", "makemigrations", "chat"], ["manage.py", "migrate"]]


@pytest.mark.timeout(180)
def test_the_tutorial_builds_a_project_that_runs_at_every_step(tmp_path):
    project = tmp_path / "mysite"
    project.mkdir()
    run(project, "-m", "django", "startproject", "mysite", ".")
    run(project, "manage.py", "startapp", "chat")
    for number, page in enumerate(STEPS, start=1):
        for name, body in files_of(page).items():
            target = project / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        # Only the commands the page tells the reader to run: a page that changed a model without saying
        # "makemigrations" fails here (and the test runs 9 Django processes fewer than running them after every page).
        for command in database_commands_of(page):
            run(project, *command)
        assert "no issues" in run(project, "manage.py", "check"), page.name
        if number == 2:
            frames = post_in_room(project, "hello")
            assert frames[-1] == {"type": "message", "author": "someone", "text": "hello"}
        if number == 5:
            frames = post_in_room(project, "guest here")
            assert frames[0] == {"type": "history", "messages": []}
            assert frames[-1]["type"] == "error"
            assert "Log in to post" in frames[-1]["message"]
            log_in_post_and_log_out(project)
    output = run(project, "manage.py", "test", "chat")
    assert re.search(r"^Ran 3 tests in .*^OK$", output, re.M | re.S), output
