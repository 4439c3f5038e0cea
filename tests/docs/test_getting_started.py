"""docs/getting-started.md, followed verbatim: a new project, the page's code blocks, a real server, a WebSocket echo.

A code block whose first line is a comment naming a file (``# chat/consumers.py``) is that file, whole. When the name
is followed by a colon (``# mysite/settings.py: change INSTALLED_APPS, ...``) the block is an edit instead: each
assignment in it replaces the assignment of the same name in the file ``startproject`` wrote, or is added at its end.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from pathlib import Path

import pytest
import websockets

from tests.conftest import free_port
from tests.project.harness import Command, run_command

PAGE = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"
BLOCK = re.compile(r"^```python\n# (?P<path>[\w/.-]+)(?P<edit>:[^\n]*)?\n(?P<body>.*?)^```", re.M | re.S)
# The URL the page's browser snippet opens.
BROWSER_URL = re.compile(r'new WebSocket\("ws://127\.0\.0\.1:8000(?P<path>/[^"]*)"\)')
BANNER_END = "quit with CONTROL-C."
SETTINGS = {"DJANGO_SETTINGS_MODULE": "mysite.settings"}


def apply_edit(source: str, edit: str) -> str:
    """``source`` with each top-level assignment of ``edit`` replacing the one of the same name, or appended."""
    lines = source.splitlines(keepends=True)
    appended = []
    for statement in ast.parse(edit).body:
        assert isinstance(statement, ast.Assign), ast.dump(statement)
        name = statement.targets[0].id  # type: ignore[attr-defined]
        text = ast.get_source_segment(edit, statement) + "\n"
        found = [
            node
            for node in ast.parse("".join(lines)).body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name
        ]
        if found:
            node = found[0]
            lines[node.lineno - 1 : node.end_lineno] = [text]
        else:
            appended.append(text)
    return "".join(lines) + "\n" + "\n".join(appended)


def build_project(project: Path) -> None:
    """``django-admin startproject mysite .``, ``startapp chat``, then every file and edit the page gives."""
    for program, args in ((("-m", "django"), ("startproject", "mysite", ".")), (("manage.py",), ("startapp", "chat"))):
        code, output = run_command(project, *args, program=program, **SETTINGS)
        assert code == 0, output
    blocks = list(BLOCK.finditer(PAGE.read_text()))
    assert {block["path"] for block in blocks} == {
        "mysite/settings.py",
        "mysite/asgi.py",
        "chat/consumers.py",
        "chat/routing.py",
    }
    for block in blocks:
        target = project / block["path"]
        if block["edit"]:
            target.write_text(apply_edit(target.read_text(), block["body"]))
        else:
            target.write_text(block["body"])


async def echo(port: int, path: str, message: dict) -> dict:
    """Open ``path`` as the page's browser snippet does (same-origin) and send ``message``; the answer."""
    url = f"ws://127.0.0.1:{port}{path}"
    async with websockets.connect(url, origin=f"http://127.0.0.1:{port}", open_timeout=5) as socket:
        await socket.send(json.dumps(message))
        return json.loads(await asyncio.wait_for(socket.recv(), 5))


@pytest.mark.timeout(60)
def test_getting_started_verbatim_checks_migrates_and_echoes_over_runserver(tmp_path):
    project = tmp_path / "mysite"
    project.mkdir()
    build_project(project)
    settings = (project / "mysite" / "settings.py").read_text()
    assert settings.count("INSTALLED_APPS = [") == 1
    assert '"django.contrib.messages"' in settings

    code, output = run_command(project, "check", **SETTINGS)
    assert code == 0 and "System check identified no issues" in output, output
    code, output = run_command(project, "migrate", "--verbosity", "0", **SETTINGS)
    assert code == 0, output

    path = BROWSER_URL.search(PAGE.read_text())["path"]  # type: ignore[index]
    port = free_port()
    with Command(project, "runserver", "--noreload", f"127.0.0.1:{port}", **SETTINGS) as server:
        banner = server.wait_for_line(BANNER_END)
        assert banner.startswith("tether ") and "uvicorn" in banner, banner
        answer = asyncio.run(echo(port, path, {"hello": "world"}))
    assert answer == {"you said": {"hello": "world"}}
