"""The leftovers checker: what it finds in Python and requirements text, and how the two commands report it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.compat.channels_project import write_channels_project
from tests.project.harness import project_env, run_command
from tether.compat.check import Leftover, scan_paths, scan_python, scan_requirements


def test_channels_imports_are_found_with_the_tether_module_to_use():
    source = "import channels.layers\nfrom channels.generic.websocket import AsyncWebsocketConsumer\n"
    assert scan_python(source, "c.py") == [
        Leftover("c.py", 1, "import channels.layers", "tether.layers"),
        Leftover("c.py", 2, "from channels.generic.websocket import", "tether.generic.websocket"),
    ]


def test_channels_redis_and_daphne_imports_are_found():
    source = "from channels_redis.core import RedisChannelLayer\nimport daphne.server\n"
    changes = [leftover.change_to for leftover in scan_python(source)]
    assert changes == [
        "tether.layers.redis (RedisChannelLayer, RedisPubSubChannelLayer)",
        "remove it: tether's runserver serves with uvicorn (django-tether[server])",
    ]


def test_imports_of_other_packages_whose_names_start_with_channels_are_not_leftovers():
    assert scan_python("import channelsmultiplexer\nfrom channels_graphql_ws import GraphqlWsConsumer\n") == []


def test_daphne_and_channels_in_installed_apps_are_found_on_their_lines():
    source = 'INSTALLED_APPS = [\n    "daphne",\n    "channels",\n    "chat",\n]\n'
    assert [(leftover.line, leftover.found, leftover.change_to[:8]) for leftover in scan_python(source)] == [
        (2, '"daphne" in INSTALLED_APPS', "remove i"),
        (3, '"channels" in INSTALLED_APPS', '"tether"'),
    ]


def test_channels_next_to_tether_in_installed_apps_is_to_be_removed():
    [leftover] = scan_python('INSTALLED_APPS = ["tether"]\nINSTALLED_APPS += ["channels"]\n')
    assert leftover.change_to == 'remove it: "tether" is already listed'


def test_layer_backends_and_other_dotted_paths_into_channels_are_found():
    source = (
        'A = "channels_redis.pubsub.RedisPubSubChannelLayer"\n'
        "B = 'channels.layers.InMemoryChannelLayer'\n"
        'C = "channels.updates"  # a group name, not a path into Channels\n'
    )
    assert [(leftover.line, leftover.change_to) for leftover in scan_python(source)] == [
        (1, "'tether.layers.redis.RedisPubSubChannelLayer'"),
        (2, "'tether.layers.InMemoryChannelLayer'"),
    ]


def test_a_python_file_that_does_not_parse_is_reported_rather_than_passed():
    [leftover] = scan_python("def broken(:\n", "broken.py")
    assert (leftover.path, leftover.line, leftover.found) == ("broken.py", 1, "a syntax error")


def test_requirement_lines_for_channels_channels_redis_and_daphne_are_found():
    text = "Django>=5\nchannels[daphne]>=4.0  # ws\nchannels-redis==4.2.0\n# daphne\ndaphne\nchannelsmultiplexer\n"
    assert [(leftover.line, leftover.found) for leftover in scan_requirements(text)] == [
        (2, "channels[daphne]>=4.0"),
        (3, "channels-redis==4.2.0"),
        (5, "daphne"),
    ]


def test_pyproject_dependencies_are_scanned(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = [\n    "channels_redis>=4",\n]\n')
    [leftover] = scan_paths([tmp_path])
    assert (leftover.line, leftover.found) == (3, "channels_redis>=4")
    assert leftover.change_to == "django-tether[server,redis]"


def test_virtual_environments_are_not_scanned(tmp_path):
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "x.py").write_text("import channels\n")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "y.py").write_text("import channels\n")
    assert scan_paths([tmp_path]) == []


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether.compat.check", *args],
        cwd=cwd,
        env=project_env(cwd),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_module_prints_file_line_and_change_and_exits_1_on_a_channels_project(tmp_path):
    write_channels_project(tmp_path)
    result = run_module(".", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "chat/consumers.py:2: from channels.generic.websocket import -> tether.generic.websocket" in lines
    assert 'mysite/settings.py:6: "channels" in INSTALLED_APPS -> "tether"' in lines
    assert "requirements.txt:3: channels-redis==4.2.0 -> django-tether[server,redis]" in lines
    assert lines[-1] == "10 leftovers of Channels found: change them as shown above."


def test_module_exits_0_on_a_clean_project(tmp_path):
    (tmp_path / "app.py").write_text("from tether.generic.websocket import AsyncWebsocketConsumer\n")
    result = run_module(cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "No leftovers of Channels found.\n")


def test_module_exits_2_and_names_a_missing_path(tmp_path):
    result = run_module("nowhere", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere does not exist" in result.stderr


def test_management_command_scans_the_project_and_fails_on_leftovers(tmp_path):
    settings = (
        "SECRET_KEY = 'x'\nINSTALLED_APPS = ['tether']\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}\n"
    )
    (tmp_path / "cleansite.py").write_text(settings)
    (tmp_path / "consumers.py").write_text("from channels.db import database_sync_to_async\n")
    code, output = run_command(
        tmp_path, "channels_leftovers", str(tmp_path), program=("-m", "django"), DJANGO_SETTINGS_MODULE="cleansite"
    )
    assert code == 1, output
    assert f"{tmp_path / 'consumers.py'}:1: from channels.db import -> tether.db" in output
    assert "1 leftover(s) of Channels to change." in output
