"""``manage.py runserver`` on uvicorn: HTTP and WebSockets from ``ASGI_APPLICATION``, autoreload and static files.

With ``"tether"`` in INSTALLED_APPS (before ``django.contrib.staticfiles``, whose own ``runserver`` would otherwise
win), this command replaces Django's development server. It keeps Django's interface: the same ``addrport``
argument (``8000``, ``0.0.0.0:8000``, ``[::1]:8000``), ``--ipv6``, ``--noreload``, ``--nostatic``, ``--insecure``
and ``--skip-checks``, the same system and migration checks, and Django's autoreloader, which restarts the server
process when a Python file changes. What serves the connections is uvicorn, through ``tether.server``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import django
from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.core.management.commands.runserver import Command as DjangoRunserverCommand
from django.db import connections
from django.utils import autoreload

import tether
from tether import DEFAULT_CHANNEL_LAYER
from tether.management import require_tether_installed
from tether.routing import get_default_application
from tether.server import UvicornNotInstalled, bind_socket, format_url, require_uvicorn, serve, with_static_files
from tether.types import ASGIApp

__all__ = ["Command"]


class Command(DjangoRunserverCommand):
    """Django's ``runserver`` interface, serving the project's ASGI application with uvicorn."""

    help = (
        "Starts tether's development server (uvicorn): HTTP and WebSockets from ASGI_APPLICATION, autoreload on "
        "code changes, and static files when DEBUG is on."
    )

    # Set by Django's runserver in handle() from the addrport argument and --ipv6.
    addr: str
    port: str
    use_ipv6: bool

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--nostatic",
            action="store_false",
            dest="use_static_handler",
            help="Do not serve static files at STATIC_URL.",
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            dest="insecure_serving",
            help="Serve static files even when DEBUG is off.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        require_tether_installed("runserver")
        try:
            require_uvicorn()
        except UvicornNotInstalled as exc:
            raise CommandError(str(exc)) from exc
        super().handle(*args, **options)

    def run(self, **options: Any) -> None:
        """Check the port, then serve through Django's autoreloader unless ``--noreload``."""
        if not 0 <= int(self.port) <= 65535:
            raise CommandError(f"{self.port} is not a valid port number: use a number from 0 to 65535.")
        super().run(**options)

    def get_application(self, **options: Any) -> ASGIApp:
        """The application to serve: ``ASGI_APPLICATION``, behind the static files handler when that is wanted."""
        dotted_path = getattr(settings, "ASGI_APPLICATION", None)
        if isinstance(dotted_path, str) and "." in dotted_path:
            # Import the module first, so an error in the project's code reaches the autoreloader as it was raised:
            # the reloader then watches the file that failed and restarts the server once it is fixed.
            importlib.import_module(dotted_path.rpartition(".")[0])
        application = get_default_application()
        if self.serves_static_files(**options):
            application = with_static_files(application)
        return application

    def serves_static_files(self, **options: Any) -> bool:
        """Static files are served unless ``--nostatic``, when DEBUG is on or ``--insecure`` is given."""
        return bool(
            options.get("use_static_handler", True) and (settings.DEBUG or options.get("insecure_serving", False))
        )

    def inner_run(self, *args: Any, **options: Any) -> None:
        """Serve until stopped; under the autoreloader this runs in a thread of the restarted child process."""
        # An import error raised while the reloader started is kept for the child process: raise it now.
        autoreload.raise_last_exception()
        application = self.get_application(**options)
        if not options.get("skip_checks"):
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for connection in connections.all(initialized_only=True):
            connection.close()

        try:
            sock = bind_socket(self.addr, int(self.port), ipv6=self.use_ipv6)
        except OSError as exc:
            self.stderr.write(f"Error: {exc.strerror or exc}")
            self.stderr.flush()
            # sys.exit() would only end this thread when the autoreloader runs us.
            os._exit(1)
        self.stdout.write(self.banner(sock.getsockname()[1], **options))
        self.stdout.flush()
        try:
            serve(application, sock, verbosity=options.get("verbosity", 1))
        except KeyboardInterrupt:
            sys.exit(0)

    def banner(self, port: int, **options: Any) -> str:
        """The one line printed once the server listens: what is served, where, and with which layer."""
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        static = "on" if self.serves_static_files(**options) else "off"
        return (
            f"tether {tether.__version__} (Django {django.get_version()}) serving {settings.ASGI_APPLICATION} "
            f"with uvicorn at {format_url('http', self.addr, port)} (layer: {describe_layer()}, static files: "
            f"{static}); quit with {quit_command}."
        )


def describe_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> str:
    """The class name of the layer configured under ``alias``, or ``"none"``; read from settings, nothing is built."""
    configs = getattr(settings, "CHANNEL_LAYERS", None)
    config = configs.get(alias) if isinstance(configs, dict) else None
    backend = config.get("BACKEND") if isinstance(config, dict) else None
    if not isinstance(backend, str) or not backend:
        return "none"
    return backend.rpartition(".")[2]
