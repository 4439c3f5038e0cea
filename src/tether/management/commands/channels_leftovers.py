"""``manage.py channels_leftovers [PATH ...]``: list what the project still takes from Django Channels.

The same scan as ``python -m tether.compat.check`` (``tether.compat.check``), started from ``manage.py`` so it needs
no path: by default it scans ``BASE_DIR`` when the settings define it, else the current directory. It exits with
status 1 when it finds anything, so CI can run it after a migration.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tether.compat.check import report, scan_paths

__all__ = ["Command"]


class Command(BaseCommand):
    """Print each leftover of Channels as ``file:line: found -> change to``; fail when there are any."""

    help = "Lists Channels imports, INSTALLED_APPS entries, layer backends and requirements still to change for tether."
    requires_system_checks: list[str] = []  # a half-migrated project may fail them; that is what this command is for

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="*", help="folders or files to scan (default: BASE_DIR, else .)")

    def handle(self, *args: Any, **options: Any) -> None:
        paths = options["paths"] or [str(getattr(settings, "BASE_DIR", "."))]
        try:
            leftovers = scan_paths(paths)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(report(leftovers))
        if leftovers:
            raise CommandError(f"{len(leftovers)} leftover(s) of Channels to change.", returncode=1)
