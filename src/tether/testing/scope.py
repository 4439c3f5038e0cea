"""The connection scope that the communicators hand an application, built one way for HTTP and WebSocket tests.

A test client has no socket, so the scope says what a server on ``testserver:80`` would say about a client on
``127.0.0.1``: the path split from its query string, percent-decoded in ``path`` and kept as sent in ``raw_path``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["connection_scope"]


def connection_scope(
    scope_type: str, scheme: str, path: str, headers: Iterable[tuple[bytes, bytes]] | None, **extra: Any
) -> dict[str, Any]:
    """An ASGI 3.0 scope of ``scope_type`` for ``path`` (which may carry a query string), with ``extra`` keys added.

    Raises ``TypeError`` when ``path`` is not a str.
    """
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {type(path).__name__}.")
    parts = urlsplit(path)
    return {
        "type": scope_type,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": scheme,
        "path": unquote(parts.path),
        "raw_path": parts.path.encode("latin-1", "replace"),
        "root_path": "",
        "query_string": parts.query.encode("utf-8"),
        "headers": list(headers or []),
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        **extra,
    }
