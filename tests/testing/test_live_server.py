"""ChannelsLiveServerTestCase under pytest-django (a test class here) and under Django's test runner (a subprocess)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from urllib.request import urlopen

import pytest
import websockets
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import ConnectionHandler
from django.test import override_settings

from tests.project.harness import copy_project, run_command
from tether import testing
from tether.testing.live import LiveServerError, refuse_in_memory_databases

STATIC_DIR = Path(__file__).resolve().parent / "live_static"


def get(url: str) -> str:
    with urlopen(url, timeout=10) as response:
        return response.read().decode()


@override_settings(ROOT_URLCONF="tests.testing.live_urls", STATICFILES_DIRS=[str(STATIC_DIR)])
class TestLiveServerUnderPytest(testing.ChannelsLiveServerTestCase):
    def test_urls_name_the_host_and_the_port_for_http_and_websocket(self):
        port = self.live_server_port
        assert port > 0
        assert self.live_server_url == f"http://127.0.0.1:{port}"
        assert self.live_server_ws_url == f"ws://127.0.0.1:{port}"

    def test_page_is_served_with_the_settings_the_class_overrides(self):
        assert get(f"{self.live_server_url}/") == "served by the live server"

    def test_server_runs_with_the_test_runs_debug_off(self):
        assert get(f"{self.live_server_url}/debug/") == "False"

    def test_server_sees_rows_the_test_created_in_the_test_database(self):
        assert get(f"{self.live_server_url}/users/") == "0"
        User.objects.create(username="grace")
        assert get(f"{self.live_server_url}/users/") == "1"

    def test_static_file_is_served(self):
        assert get(f"{self.live_server_url}/static/live/note.txt").strip() == "served from STATICFILES_DIRS"

    def test_websocket_echo(self):
        async def echo():
            async with websockets.connect(f"{self.live_server_ws_url}/ws/echo/") as ws:
                await ws.send("through the live server")
                return await ws.recv()

        assert asyncio.run(echo()) == "through the live server"


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_server_stops_when_the_class_is_done():
    class Case(testing.ChannelsLiveServerTestCase):
        serve_static = False

    Case.setUpClass()
    try:
        port = Case.live_server_port
        assert get(f"{Case.live_server_url}/") == "tether test project"
    finally:
        Case.doClassCleanups()
    assert not _port_answers(port)
    with pytest.raises(LiveServerError, match="live server is not running"):
        Case.live_server_url  # noqa: B018 - the property access raises


def test_server_that_cannot_start_reports_its_error():
    @override_settings(ASGI_APPLICATION="tests.no_such_module.application")
    class Case(testing.ChannelsLiveServerTestCase):
        startup_timeout = 20

    try:
        with pytest.raises(LiveServerError, match="exited with code 1") as caught:
            Case.setUpClass()
    finally:
        Case.doClassCleanups()
    assert "tests.no_such_module" in str(caught.value)


def test_live_server_url_outside_a_running_class_is_an_error():
    with pytest.raises(LiveServerError, match="ChannelsLiveServerTestCase's live server is not running"):
        testing.ChannelsLiveServerTestCase.live_server_url  # noqa: B018 - the property access raises


def test_in_memory_sqlite_database_is_refused_with_how_to_use_a_file():
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}})
    with pytest.raises(ImproperlyConfigured, match="cannot see the in-memory SQLite test database") as caught:
        refuse_in_memory_databases(handler.all())
    assert "DATABASES['default']['TEST'] = {'NAME': " in str(caught.value)


def test_file_sqlite_database_is_accepted(tmp_path):
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "db.sqlite3"}})
    refuse_in_memory_databases(handler.all())


def test_importing_tether_testing_does_not_import_uvicorn(tmp_path):
    code, output = run_command(
        tmp_path,
        "-c",
        "import sys, tether.testing; print(sorted(m for m in sys.modules if m.split('.')[0] == 'uvicorn'))",
        program=(),
    )
    assert (code, output.strip()) == (0, "[]")


def test_djangos_test_runner_runs_a_live_server_test_case(tmp_path):
    project = copy_project(tmp_path)
    code, output = run_command(project, "test", "project.tests_live", "-v", "2", program=("-m", "django"))
    assert code == 0, output
    assert "Ran 4 tests" in output
    assert "\nOK\n" in output
