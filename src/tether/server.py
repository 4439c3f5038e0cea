"""How tether serves an ASGI application with uvicorn, for ``manage.py runserver`` and the live-server test case.

tether implements no HTTP or WebSocket framing: uvicorn does. This module holds the few decisions both callers share,
so they serve the same way: the listening socket is bound here (a clear error for a port in use, and the real port
when port 0 asks the OS to pick one), static files are served through Django's ``ASGIStaticFilesHandler`` for HTTP
only, uvicorn is configured with its defaults for HTTP, WebSockets and the lifespan protocol, and auth tokens given
in a query string are redacted from its request log (``tether.access_log``).

uvicorn is an optional dependency (the ``server`` extra). Nothing here imports it until a server is built, so
importing this module never fails; ``require_uvicorn()`` names the install command when it is missing.
"""

from __future__ import annotations

import errno
import logging
import socket
from types import ModuleType
from typing import TYPE_CHECKING, Any

from django.apps import apps

from tether.access_log import redact_tokens_in_access_log
from tether.drain import draining_ws_protocol
from tether.handshake import keepalive_ws_protocol, with_handshake_deadline
from tether.limits import (
    drain_timeout,
    handshake_timeout,
    max_message_size,
    ws_compression,
    ws_ping_interval,
    ws_ping_timeout,
)
from tether.types import ASGIApp
from tether.wsprotocol import lean_ws_protocol

if TYPE_CHECKING:
    from uvicorn import Server as UvicornServer

__all__ = [
    "UvicornNotInstalled",
    "bind_socket",
    "format_url",
    "make_server",
    "require_uvicorn",
    "serve",
    "with_static_files",
]

logger = logging.getLogger("tether.server")

#: How the OS errors of ``bind()`` that users meet are explained, by errno.
_BIND_ERRORS = {
    errno.EACCES: "You don't have permission to listen on that port; use a port above 1023.",
    errno.EADDRINUSE: "That port is already in use; stop the other server or pick another port.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to; use an address of this machine, such as 127.0.0.1.",
}

#: Seconds uvicorn's graceful shutdown waits beyond the drain's timeout: for the last closes and the lifespan shutdown.
_SHUTDOWN_MARGIN = 2.0

#: The uvicorn log level for each Django ``--verbosity``.
_LOG_LEVELS = {0: "warning", 1: "info", 2: "debug", 3: "trace"}


class UvicornNotInstalled(ImportError):
    """uvicorn, the server tether serves with, is not installed."""


def require_uvicorn() -> ModuleType:
    """Import and return uvicorn, or raise ``UvicornNotInstalled`` saying how to install it."""
    try:
        import uvicorn
    except ImportError as exc:
        raise UvicornNotInstalled(
            "tether serves ASGI applications with uvicorn, which is not installed. Install tether's server extra "
            '(pip install -e ".[server]" in a clone of tether, or pip install "django-tether[server]" once it is on '
            'the package index), or uvicorn itself: pip install "uvicorn[standard]".'
        ) from exc
    return uvicorn


def bind_socket(host: str, port: int, *, ipv6: bool = False, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening, ready to hand to uvicorn.

    ``port`` 0 lets the OS pick a free port (read it back with ``sock.getsockname()[1]``). ``ipv6`` binds an IPv6
    socket; ``host`` is then an IPv6 address without brackets, such as ``"::1"``. Raises ``OSError`` with a message
    that says what to do for the usual failures (port in use, no permission, address not on this machine).
    """
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        explanation = _BIND_ERRORS.get(exc.errno or 0)
        if explanation is None:
            raise
        raise OSError(exc.errno, f"Cannot listen on {format_url('http', host, port)}: {explanation}") from exc
    except OverflowError as exc:
        sock.close()
        raise OSError(errno.EINVAL, f"Port {port} is out of range: use a number from 0 to 65535.") from exc
    sock.set_inheritable(True)
    return sock


def format_url(scheme: str, host: str, port: int, path: str = "/") -> str:
    """``scheme://host:port`` then ``path``, with an IPv6 address in brackets and ``0.0.0.0`` for Django's ``0``.

    ``path=""`` gives the base URL without a trailing slash, for callers that append their own paths.
    """
    if host == "0":
        host = "0.0.0.0"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{path}"


def with_static_files(application: ASGIApp) -> ASGIApp:
    """Wrap ``application`` so HTTP requests under ``STATIC_URL`` are answered from the static files finders.

    Other requests, WebSocket connections and the lifespan protocol go to ``application`` unchanged. Returns
    ``application`` itself when ``django.contrib.staticfiles`` is not installed, as Django's runserver does.
    """
    if not apps.is_installed("django.contrib.staticfiles"):
        return application
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    # django-stubs types the handler as wrapping Django's own ASGIHandler, with dict scopes; it wraps any ASGI app.
    return ASGIStaticFilesHandler(application)  # type: ignore[arg-type, return-value]


def make_server(
    application: ASGIApp, *, verbosity: int = 1, drain: bool = True, **uvicorn_options: Any
) -> UvicornServer:
    """A ``uvicorn.Server`` for ``application``, not started yet.

    ``verbosity`` follows Django's: 0 logs only warnings and errors, 1 adds one access-log line per request, 2 and 3
    log uvicorn's debug and trace output. uvicorn's own start-up lines are kept quiet at verbosity 1, since the
    caller prints its own banner. The value of a ``token`` query parameter is ``[redacted]`` in what uvicorn logs
    (``tether.access_log``). ``uvicorn_options`` go to ``uvicorn.Config`` (for example ``ws_max_size``).
    The largest incoming WebSocket message is ``TETHER_MAX_MESSAGE_SIZE`` (1 MiB by default) unless ``ws_max_size``
    is given: uvicorn then refuses a larger frame with close code 1009 before buffering it whole. Keepalive pings
    follow ``TETHER_WS_PING_INTERVAL`` and ``TETHER_WS_PING_TIMEOUT`` (20 s each) with a WebSocket implementation that
    really sends them (``tether.handshake``), a connection that has not completed its handshake within
    ``TETHER_HANDSHAKE_TIMEOUT`` seconds (5) is closed, and compression (permessage-deflate) is offered unless
    ``TETHER_WS_COMPRESSION`` is ``False``. When the server is told to stop, its WebSockets are drained
    (``tether.drain``): closed with 1012 a batch at a time over ``TETHER_DRAIN_WINDOW`` seconds, each after its
    handler in progress; ``timeout_graceful_shutdown`` defaults to ``TETHER_DRAIN_TIMEOUT`` plus 2 seconds, so that
    uvicorn never cuts the drain short. ``drain=False`` keeps uvicorn's own stop (every WebSocket closed with 1012 at
    once, handlers cancelled), for test servers that must stop at once.
    Raises ``UvicornNotInstalled`` when uvicorn is missing.
    """
    uvicorn = require_uvicorn()
    options: dict[str, Any] = {
        "lifespan": "auto",
        "log_level": _LOG_LEVELS.get(verbosity, "info"),
        "access_log": verbosity >= 1,
        "ws_max_size": max_message_size(),
        "ws_ping_interval": ws_ping_interval(),
        "ws_ping_timeout": ws_ping_timeout(),
        "ws_per_message_deflate": ws_compression(),
    }
    if drain:
        options["timeout_graceful_shutdown"] = drain_timeout() + _SHUTDOWN_MARGIN
    options.update(uvicorn_options)
    ws_protocol = _ws_protocol_class(keepalive_ws_protocol(options.get("ws", "auto")))
    if ws_protocol is None:
        options["ws"] = "none"
    else:
        ws_protocol = lean_ws_protocol(ws_protocol)
        options["ws"] = draining_ws_protocol(ws_protocol) if drain else ws_protocol
    options["http"] = with_handshake_deadline(_http_protocol_class(options.get("http", "auto")), handshake_timeout())
    config = uvicorn.Config(application, **options)
    redact_tokens_in_access_log()
    if verbosity <= 1:
        # Config() has just set uvicorn's loggers up; errors from the application still come through this logger.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    server: UvicornServer = uvicorn.Server(config)
    return server


def _http_protocol_class(http: Any) -> type[Any]:
    """uvicorn's HTTP protocol class for its ``http`` option: a class as given, or the one a name stands for."""
    if not isinstance(http, str):
        return http  # type: ignore[no-any-return]
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    return import_from_string(HTTP_PROTOCOLS.get(http, http))  # type: ignore[no-any-return]


def _ws_protocol_class(ws: Any) -> type[Any] | None:
    """uvicorn's WebSocket protocol class for its ``ws`` option (a class as given, a name looked up); None for none."""
    if not isinstance(ws, str):
        return ws  # type: ignore[no-any-return]
    from uvicorn.config import WS_PROTOCOLS
    from uvicorn.importer import import_from_string

    path = WS_PROTOCOLS.get(ws, ws)
    return None if path is None else import_from_string(path)


def serve(application: ASGIApp, sock: socket.socket, *, verbosity: int = 1, **uvicorn_options: Any) -> None:
    """Serve ``application`` on the listening socket ``sock`` until the process is told to stop.

    Blocks. In the main thread, SIGINT and SIGTERM shut the server down gracefully; in another thread (Django's
    autoreloader runs the server in one) the process's exit ends it.
    """
    server = make_server(application, verbosity=verbosity, **uvicorn_options)
    logger.debug("Serving %r on %s.", application, sock.getsockname())
    server.run(sockets=[sock])
