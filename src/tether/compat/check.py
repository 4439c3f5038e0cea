"""Find what is left of Django Channels in a project: imports, settings and requirements still to change.

Run it as ``python -m tether.compat.check [PATH ...]`` (no Django settings needed, so it works on a half-migrated
project that does not start) or as ``manage.py channels_leftovers``. Each finding is printed as
``file:line: what is there -> what to write instead``; the exit status is 1 when anything was found, 0 when not.

What it looks for:

- Python imports of ``channels``, ``channels_redis`` and ``daphne``;
- ``"daphne"`` and ``"channels"`` in ``INSTALLED_APPS`` (``"channels"`` becomes ``"tether"``, once);
- dotted paths in strings such as layer backends (``"channels_redis.core.RedisChannelLayer"``,
  ``"channels.layers.InMemoryChannelLayer"``) or an ``ASGI_APPLICATION`` inside ``channels``;
- ``channels``, ``channels-redis`` and ``daphne`` in requirements files, ``pyproject.toml``, ``setup.py`` and
  ``setup.cfg``.

The scanning functions work on text and return ``Leftover`` records, so they are tested without touching files;
``scan_paths`` reads the files and ``main`` prints.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Leftover", "main", "report", "scan_paths", "scan_python", "scan_requirements"]

logger = logging.getLogger("tether.compat.check")

#: Channels 4.3.2's top-level modules and packages: a dotted path starting with one of them names Channels code.
_CHANNELS_MODULES = frozenset(
    {
        "apps", "auth", "consumer", "db", "exceptions", "generic", "layers", "management", "middleware",
        "routing", "security", "sessions", "testing", "utils", "worker",
    }
)  # fmt: skip

_REDIS_LAYERS = {
    "channels_redis.core.RedisChannelLayer": "tether.layers.redis.RedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer": "tether.layers.redis.RedisPubSubChannelLayer",
}

_SERVER_INSTEAD = "remove it: tether's runserver serves with uvicorn (django-tether[server])"

_SKIPPED_DIRECTORIES = frozenset(
    {".git", ".hg", ".tox", ".nox", ".venv", "venv", "env", "node_modules", "__pycache__", "site-packages",
     "build", "dist"}
)  # fmt: skip

_REQUIREMENT = re.compile(
    r"""^\s*["']?(?P<name>channels(?:[-_.]redis)?|daphne)(?![\w.-])(?P<rest>[^"',#]*)""", re.IGNORECASE
)


@dataclass(frozen=True)
class Leftover:
    """One place that still names Channels: where, what is there, and what to write instead."""

    path: str
    line: int
    found: str
    change_to: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.found} -> {self.change_to}"


def _module_change(module: str) -> str:
    """What to import instead of the Channels module ``module``."""
    root, _, rest = module.partition(".")
    if root == "daphne":
        return _SERVER_INSTEAD
    if root == "channels_redis":
        return "tether.layers.redis (RedisChannelLayer, RedisPubSubChannelLayer)"
    return f"tether.{rest}" if rest else "tether"


def _is_channels_module(module: str | None) -> bool:
    return module is not None and module.partition(".")[0] in ("channels", "channels_redis", "daphne")


def _dotted_path_change(value: str) -> str | None:
    """The replacement for a string that is a dotted path into Channels or channels_redis, or None."""
    if value in _REDIS_LAYERS:
        return _REDIS_LAYERS[value]
    parts = value.split(".")
    is_dotted_path = all(part.isidentifier() for part in parts)
    if len(parts) >= 2 and parts[0] == "channels" and parts[1] in _CHANNELS_MODULES and is_dotted_path:
        return "tether." + ".".join(parts[1:])
    return None


def _installed_apps_entries(tree: ast.AST) -> Iterator[ast.Constant]:
    """The string entries of every list or tuple assigned or added to ``INSTALLED_APPS``."""
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        if not any(isinstance(target, ast.Name) and target.id == "INSTALLED_APPS" for target in targets):
            continue
        value = getattr(node, "value", None)
        for element in ast.walk(value) if value is not None else ():
            if isinstance(element, ast.Constant) and isinstance(element.value, str):
                yield element


def scan_python(source: str, path: str = "<source>") -> list[Leftover]:
    """Leftovers of Channels in one Python file's text: imports, INSTALLED_APPS entries, dotted-path strings.

    A file that does not parse yields one leftover saying so, since the scan cannot vouch for it.
    """
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return [Leftover(path, exc.lineno or 1, "a syntax error", "fix it, then check this file again")]
    found: list[Leftover] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_channels_module(alias.name):
                    found.append(Leftover(path, node.lineno, f"import {alias.name}", _module_change(alias.name)))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_channels_module(node.module):
            module = node.module or ""
            found.append(Leftover(path, node.lineno, f"from {module} import", _module_change(module)))
    app_entries = list(_installed_apps_entries(tree))
    app_names = [entry.value for entry in app_entries]
    for entry in app_entries:
        if entry.value == "daphne":
            found.append(Leftover(path, entry.lineno, '"daphne" in INSTALLED_APPS', _SERVER_INSTEAD))
        elif entry.value == "channels":
            change = 'remove it: "tether" is already listed' if "tether" in app_names else '"tether"'
            found.append(Leftover(path, entry.lineno, '"channels" in INSTALLED_APPS', change))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            dotted = _dotted_path_change(node.value)
            if dotted is not None:
                found.append(Leftover(path, node.lineno, repr(node.value), repr(dotted)))
    return sorted(found, key=lambda leftover: leftover.line)


def scan_requirements(text: str, path: str = "<requirements>") -> list[Leftover]:
    """Leftovers in a requirements-like file: lines that depend on channels, channels-redis or daphne."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _REQUIREMENT.match(line)
        if match is None:
            continue
        name = match["name"].lower()
        requirement = (match["name"] + match["rest"]).strip()
        if name == "daphne":
            change = "remove it: tether serves with uvicorn (django-tether[server])"
        elif name == "channels":
            change = "django-tether[server,redis] (or django-tether[server] without Redis)"
        else:
            change = "django-tether[server,redis]"
        found.append(Leftover(path, number, requirement, change))
    return found


def _is_requirements_file(path: Path) -> bool:
    name = path.name
    if name in ("pyproject.toml", "setup.cfg", "Pipfile"):
        return True
    return path.suffix in (".txt", ".in") and (name.startswith("requirements") or path.parent.name == "requirements")


def _files_under(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            name for name in subdirectories if name not in _SKIPPED_DIRECTORIES and not name.startswith(".")
        )
        for name in sorted(files):
            yield Path(directory, name)


def scan_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Leftover]:
    """Leftovers in every Python and requirements file under ``paths`` (files or directories).

    Virtual environments, VCS folders and build output are skipped. Raises ``FileNotFoundError`` for a path that
    does not exist.
    """
    found: list[Leftover] = []
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist; pass the folder of your Django project.")
        for file in _files_under(root):
            scanner: Callable[[str, str], list[Leftover]]
            if file.suffix == ".py" and file.name != "setup.py":
                scanner = scan_python
            elif _is_requirements_file(file) or file.name == "setup.py":
                scanner = scan_requirements
            else:
                continue
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                logger.warning("Skipped %s: %s", file, exc)
                continue
            found.extend(scanner(text, str(file)))
    return found


def report(leftovers: Sequence[Leftover]) -> str:
    """The text ``main`` prints: one line per leftover and a closing count."""
    if not leftovers:
        return "No leftovers of Channels found."
    lines = [str(leftover) for leftover in leftovers]
    plural = "" if len(leftovers) == 1 else "s"
    lines.append(f"{len(leftovers)} leftover{plural} of Channels found: change them as shown above.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tether.compat.check [PATH ...]``: print the leftovers; 1 when there are any, 2 for a bad path."""
    parser = argparse.ArgumentParser(
        prog="python -m tether.compat.check",
        description="List what a project still takes from Django Channels, file:line, and what to change it to.",
    )
    parser.add_argument("paths", nargs="*", default=["."], help="project folders or files (default: .)")
    options = parser.parse_args(argv)
    try:
        leftovers = scan_paths(options.paths)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(leftovers))
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
