"""manage.py runserver with tether: a real subprocess in a copy of the test project, driven over HTTP and WebSocket.

The option handling that needs no server (static files choice, bad ports, missing uvicorn) is tested in-process.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from django.test import override_settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import free_port
from tests.project.harness import Command, child_pids, copy_project, http_get, run_command
from tether.management.commands.runserver import Command as RunserverCommand

BANNER_END = "quit with CONTROL-C."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``runserver --noreload`` on a free port, shared by the tests that only talk to it."""
    project = copy_project(tmp_path_factory.mktemp("runserver"))
    address = f"127.0.0.1:{free_port()}"
    with Command(project, "runserver", "--noreload", address) as command:
        command.wait_for_line(BANNER_END)
        yield command, address


def test_banner_names_tether_the_application_uvicorn_the_address_and_the_layer(server):
    command, address = server
    banner = command.wait_for_line(BANNER_END)
    assert banner.startswith("tether 0.1.0 (Django ")
    assert f"serving project.asgi.application with uvicorn at http://{address}/" in banner
    assert "(layer: InMemoryChannelLayer, static files: on)" in banner
    assert "System check identified no issues" in command.output


def test_page_is_served_over_http(server):
    _, address = server
    assert http_get(f"http://{address}/") == (200, "hello from the tether test project")


def test_static_file_is_served_when_debug_is_on(server):
    _, address = server
    status, body = http_get(f"http://{address}/static/project/hello.txt")
    assert (status, body.strip()) == (200, "a static file of the tether test project")


def test_missing_static_file_is_a_404(server):
    _, address = server
    assert http_get(f"http://{address}/static/project/missing.txt")[0] == 404


def test_websocket_echo(server):
    _, address = server
    with connect(f"ws://{address}/ws/echo/", open_timeout=10) as ws:
        ws.send("hello over runserver")
        assert ws.recv(timeout=10) == "hello over runserver"


def test_a_message_over_the_limit_is_refused_by_the_server_with_1009(server):
    _, address = server
    with connect(f"ws://{address}/ws/echo/", open_timeout=10, max_size=None) as ws:
        ws.send("a" * (1024 * 1024 + 1))  # TETHER_MAX_MESSAGE_SIZE's default, plus one byte
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1009
    # uvicorn's reason, not the consumer's ("Message over ... bytes"): the frame never reached the application.
    assert "exceeds limit of 1048576 bytes" in (ws.close_reason or "")


def test_noreload_serves_from_a_single_process(server):
    command, _ = server
    assert child_pids(command.process.pid) == []
    assert "Watching for file changes" not in command.output


def served_after_edit(url: str, expected: str, edited: Path, timeout: float = 30) -> str:
    """What ``url`` serves once it serves ``expected``, or at the deadline.

    Django's reloader compares modification times once a second and only notices a change in a file it had already
    seen, so ``edited`` is touched again each second until the new code is served.
    """
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            body = http_get(url, timeout=2)[1]
        except OSError:
            body = ""  # The server is restarting.
        if body == expected:
            break
        edited.touch()
        time.sleep(1)
    return body


@pytest.fixture
def autoreloading(tmp_path):
    """``runserver`` with the autoreloader in a copy of the project of this test only: ``(project, command, url)``."""
    project = copy_project(tmp_path)
    port = free_port()
    with Command(project, "runserver", f"127.0.0.1:{port}") as command:
        command.wait_for_line(BANNER_END)
        yield project, command, f"http://127.0.0.1:{port}/"


def test_autoreload_serves_the_edited_view(autoreloading):
    project, command, url = autoreloading
    assert "Watching for file changes" in command.output
    assert http_get(url)[1] == "hello from the tether test project"

    views = project / "project" / "views.py"
    views.write_text(views.read_text().replace("hello from the tether test project", "edited while running"))
    body = served_after_edit(url, "edited while running", views)
    assert body == "edited while running", command.output


def test_autoreload_recovers_once_a_syntax_error_is_fixed(autoreloading):
    project, command, url = autoreloading
    consumers = project / "project" / "consumers.py"
    good = consumers.read_text()
    consumers.write_text(good + "\ndef broken(:\n")
    # A restart imports Django and the project again: on a loaded machine (it once took over 30 s in CI) give it time.
    deadline = time.monotonic() + 60
    while "SyntaxError" not in command.output and time.monotonic() < deadline:
        consumers.touch()  # until the reloader, which must have seen the file before, notices the change
        time.sleep(1)
    command.wait_for_line("SyntaxError", timeout=1)

    consumers.write_text(good)
    body = served_after_edit(url, "hello from the tether test project", consumers)
    assert body == "hello from the tether test project", command.output


def test_bad_addrport_is_a_clear_error(tmp_path):
    project = copy_project(tmp_path)
    code, output = run_command(project, "runserver", "not-a:port")
    assert code == 1
    assert '"not-a:port" is not a valid port number or address:port pair.' in output


def test_port_in_use_is_a_clear_error(tmp_path):
    project = copy_project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = run_command(project, "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}")
    assert code == 1
    assert "Error: Cannot listen on" in output
    assert "That port is already in use" in output


def test_ipv6_addrport_serves_on_ipv6_loopback(tmp_path):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError as exc:
        pytest.skip(f"::1 is not available here: {exc}")
    project = copy_project(tmp_path)
    with Command(project, "runserver", "--noreload", "--skip-checks", f"[::1]:{port}") as command:
        banner = command.wait_for_line(BANNER_END)
        assert f"at http://[::1]:{port}/" in banner
        assert http_get(f"http://[::1]:{port}/") == (200, "hello from the tether test project")


def test_tether_provides_runserver_when_installed():
    assert get_commands()["runserver"] == "tether"


@override_settings(INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"])
def test_without_tether_runserver_is_djangos_own():
    assert get_commands()["runserver"] == "django.core"


@override_settings(INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"])
def test_tethers_runserver_without_tether_installed_says_to_install_it():
    with pytest.raises(CommandError, match='needs "tether" in INSTALLED_APPS'):
        call_command(RunserverCommand(), "--noreload", "--skip-checks")


def test_port_out_of_range_is_a_clear_error():
    with pytest.raises(CommandError, match="99999 is not a valid port number: use a number from 0 to 65535"):
        call_command("runserver", "99999", "--noreload", "--skip-checks")


def test_missing_uvicorn_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what Python does for a module that cannot be imported
    with pytest.raises(CommandError, match=r'pip install -e "\.\[server\]" in a clone of tether'):
        call_command("runserver", "--noreload", "--skip-checks")


def _application(**options):
    command = RunserverCommand()
    defaults = {"use_static_handler": True, "insecure_serving": False}
    return command.get_application(**{**defaults, **options})


@override_settings(DEBUG=True)
def test_static_files_are_served_when_debug_is_on():
    assert isinstance(_application(), ASGIStaticFilesHandler)


@override_settings(DEBUG=True)
def test_nostatic_serves_no_static_files():
    assert not isinstance(_application(use_static_handler=False), ASGIStaticFilesHandler)


@override_settings(DEBUG=False)
def test_no_static_files_when_debug_is_off():
    assert not isinstance(_application(), ASGIStaticFilesHandler)


@override_settings(DEBUG=False)
def test_insecure_serves_static_files_when_debug_is_off():
    assert isinstance(_application(insecure_serving=True), ASGIStaticFilesHandler)
