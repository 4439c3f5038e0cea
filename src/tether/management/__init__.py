"""Management commands that ``"tether"`` in INSTALLED_APPS adds to ``manage.py``: ``runserver``, ``runworker`` and
``channels_leftovers``.

Django finds a command only in installed apps, so without ``"tether"`` in INSTALLED_APPS ``manage.py runworker`` is
an unknown command and ``manage.py runserver`` is Django's own WSGI server. A project that reaches tether's commands
another way (``call_command`` with a command instance, or a command module of its own that imports tether's) is told
to install the app, because tether's system checks only run for installed apps.
"""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import CommandError

__all__ = ["require_tether_installed"]


def require_tether_installed(command: str) -> None:
    """Raise ``CommandError`` when ``"tether"`` is not in INSTALLED_APPS, naming ``command`` and the fix."""
    if not apps.is_installed("tether"):
        raise CommandError(
            f'tether\'s {command} command needs "tether" in INSTALLED_APPS (put it before '
            f'"django.contrib.staticfiles"), so that manage.py finds it and tether\'s system checks run.'
        )
