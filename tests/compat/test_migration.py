"""Moving a Channels project over: the one-liner of docs/coming-from-channels.md run verbatim, then the checker.

The one-liner is read from the doc itself, so the doc cannot drift from what is tested. It runs on the tutorial-style
project of ``channels_project.py`` written into a temporary folder, and the result must pass ``manage.py check`` with
tether (daphne is not installed here, so a leftover ``"daphne"`` would fail it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.compat.channels_project import FILES, write_channels_project
from tests.project.harness import run_command
from tether.compat.check import scan_paths

DOC = Path(__file__).resolve().parents[2] / "docs" / "coming-from-channels.md"


def one_liner() -> str:
    """The first ``sh`` code block after "A one-liner" in the doc."""
    text = DOC.read_text()
    match = re.search(r"A one-liner.*?```sh\n(.*?)```", text, re.DOTALL)
    assert match, f"no one-liner code block in {DOC}"
    return match.group(1)


def migrate(project: Path) -> None:
    subprocess.run(["bash", "-c", one_liner()], cwd=project, check=True, timeout=30)


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    project = write_channels_project(tmp_path)
    migrate(project)
    return project


def test_one_liner_turns_the_apps_into_tether_and_drops_daphne(migrated):
    settings = (migrated / "mysite" / "settings.py").read_text()
    assert '    "tether",\n    "chat",' in settings
    assert "daphne" not in settings
    assert '"channels"' not in settings


def test_one_liner_renames_layer_backends_and_imports(migrated):
    settings = (migrated / "mysite" / "settings.py").read_text()
    assert '"BACKEND": "tether.layers.redis.RedisChannelLayer"' in settings
    assert "\"BACKEND\": 'tether.layers.InMemoryChannelLayer'" in settings
    consumers = (migrated / "chat" / "consumers.py").read_text()
    assert consumers.startswith("import tether.layers\nfrom tether.generic.websocket import AsyncWebsocketConsumer\n")
    assert "tether.layers.get_channel_layer()" in consumers


def test_migrated_project_passes_manage_py_check_with_tether(migrated):
    code, output = run_command(migrated, "check", DJANGO_SETTINGS_MODULE="mysite.settings")
    assert code == 0, output
    assert "System check identified no issues" in output


def test_after_the_one_liner_only_the_requirements_are_left_to_change(migrated):
    leftovers = scan_paths([migrated])
    assert [(Path(leftover.path).name, leftover.line) for leftover in leftovers] == [
        ("requirements.txt", 2),
        ("requirements.txt", 3),
    ]


def test_one_liner_keeps_a_single_tether_when_the_project_listed_it_already(tmp_path):
    settings = FILES["mysite/settings.py"].replace('    "chat",\n', '    "chat",\n    "tether",\n')
    project = write_channels_project(tmp_path, **{"mysite/settings.py": settings})
    migrate(project)
    assert (project / "mysite" / "settings.py").read_text().count('"tether"') == 1


def test_one_liner_changes_nothing_in_a_file_without_channels(tmp_path):
    project = write_channels_project(tmp_path)
    before = (project / "mysite" / "urls.py").read_text()
    migrate(project)
    assert (project / "mysite" / "urls.py").read_text() == before
