"""The distribution: what ``python -m build`` makes is what a user installs, and the package index would accept it.

Until django-tether is on the package index, users install it from a clone, a git URL or a built wheel
(docs/getting-started.md), so a wheel without ``tether.js`` or ``py.typed``, or one that drags the test suite along,
is a broken install for them. The wheel and the sdist are built once for the module (about 3 s each).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

import tether

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

#: The files outside Python modules that the package must carry (pyproject.toml's package-data).
DATA_FILES = [
    "tether/py.typed",
    "tether/static/tether/tether.js",
    "tether/status/static/tether/status.js",
    "tether/status/templates/tether/status.html",
]


def build(kind: str, outdir: Path) -> Path:
    """Build one distribution (``--wheel`` or ``--sdist``) of the project into ``outdir`` and return its path."""
    result = subprocess.run(
        [sys.executable, "-m", "build", kind, "--outdir", str(outdir), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"python -m build {kind} failed:\n{result.stdout}\n{result.stderr}"
    (built,) = outdir.iterdir()
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("--wheel", tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("--sdist", tmp_path_factory.mktemp("sdist"))


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def source_modules() -> set[str]:
    """Every module of the package in the source tree, as a path inside the wheel (``tether/layers/base.py``)."""
    return {path.relative_to(SRC).as_posix() for path in (SRC / "tether").rglob("*.py")}


def test_wheel_is_named_for_the_distribution_and_version(wheel: Path) -> None:
    assert wheel.name == f"django_tether-{tether.__version__}-py3-none-any.whl"


def test_wheel_carries_the_static_client_and_the_typing_marker(wheel: Path) -> None:
    names = wheel_names(wheel)
    for data_file in DATA_FILES:
        assert data_file in names


def test_wheel_carries_every_module_of_the_source_tree(wheel: Path) -> None:
    modules = source_modules()
    assert "tether/layers/redis/core.py" in modules  # the tree walk reaches sub-packages
    assert modules - wheel_names(wheel) == set()


def test_wheel_carries_nothing_but_the_package_and_its_metadata(wheel: Path) -> None:
    dist_info = f"django_tether-{tether.__version__}.dist-info/"
    strays = {name for name in wheel_names(wheel) if not name.startswith(("tether/", dist_info))}
    assert strays == set()
    # Stated separately, for a reader of a failure: the test suite, the example project and the benchmarks stay out.
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in wheel_names(wheel))


def test_wheel_metadata_names_the_distribution_version_and_python(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"django_tether-{tether.__version__}.dist-info/METADATA").decode()
    metadata = HeaderParser().parsestr(text)
    assert metadata["Name"] == "django-tether"
    assert metadata["Version"] == tether.__version__
    assert metadata["Requires-Python"] == ">=3.10"
    assert "Django>=4.2" in metadata.get_all("Requires-Dist")


def test_sdist_carries_the_static_client_and_the_typing_marker(sdist: Path) -> None:
    prefix = f"django_tether-{tether.__version__}/src/"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    for data_file in DATA_FILES:
        assert prefix + data_file in names


def test_twine_check_accepts_the_wheel_and_the_sdist(wheel: Path, sdist: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
