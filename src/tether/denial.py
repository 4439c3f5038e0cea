"""Refusing a WebSocket handshake with an HTTP response: a status, headers and a body the client can read.

A plain refusal (``websocket.close`` before ``websocket.accept``) makes the server answer 403 with an empty body, so a
client cannot tell "log in first" (401) from "slow down" (429) or "no such endpoint" (404). The ASGI *WebSocket
Denial Response* extension lets the application send an HTTP response instead: ``websocket.http.response.start``
(status and headers) then ``websocket.http.response.body``. A server that offers it lists
``"websocket.http.response"`` in ``scope["extensions"]`` (uvicorn and hypercorn do; daphne does not). Where it is
missing, tether falls back to the plain refusal, so the same code runs on every server.

Used by the WebSocket consumers' ``deny()`` and by ``URLRouter`` for a path that no route matches.
"""

from __future__ import annotations

import logging
from typing import Any

from tether.generic.headers import Headers, encode_headers
from tether.types import Message, Scope, Send

__all__ = ["EXTENSION", "denial_messages", "send_denial", "supports_denial_response"]

logger = logging.getLogger("tether.denial")

#: The key of the extension in ``scope["extensions"]``.
EXTENSION = "websocket.http.response"


def supports_denial_response(scope: Scope) -> bool:
    """Tell whether the server serving ``scope`` takes an HTTP response in place of a WebSocket handshake."""
    extensions = scope.get("extensions")
    return isinstance(extensions, dict) and EXTENSION in extensions


def _check_status(status: Any) -> int:
    if type(status) is not int or not 300 <= status <= 599:
        raise ValueError(
            f"A denial is an HTTP error response: use a status from 300 to 599 such as 401, 403, 404 or 429, "
            f"not {status!r}."
        )
    return status


def _response_parts(body: bytes | str, headers: Headers | None) -> tuple[bytes, list[Any]]:
    """The body as bytes and the headers encoded, with a ``content-type`` for a ``str`` body when none is given."""
    encoded = encode_headers(headers)
    if isinstance(body, str):
        body = body.encode("utf-8")
        if not any(bytes(name).lower() == b"content-type" for name, _ in encoded):
            encoded.append((b"content-type", b"text/plain; charset=utf-8"))
    elif not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"A denial body must be bytes or str, not {type(body).__name__}.")
    return bytes(body), encoded


def denial_messages(
    scope: Scope, status: int = 403, body: bytes | str = b"", headers: Headers | None = None
) -> list[Message]:
    """The ASGI messages that refuse the handshake of ``scope``: an HTTP response where the server supports it.

    ``status`` (300 to 599), ``headers`` (pairs or a dict, ``str`` or ``bytes``) and ``body`` (``str`` is sent as
    UTF-8 text) make the response. Without the server's extension the one message is a plain close, which the server
    answers with 403 and no body; the status asked for is then logged at DEBUG level on ``tether.denial``. Raises
    ``ValueError`` for a status outside 300-599 and ``TypeError`` for a body that is neither ``bytes`` nor ``str``.
    """
    status = _check_status(status)
    payload, encoded = _response_parts(body, headers)
    if not supports_denial_response(scope):
        logger.debug(
            "The server has no %r extension: refusing %r with a plain close (HTTP 403) instead of %d.",
            EXTENSION,
            scope.get("path"),
            status,
        )
        return [{"type": "websocket.close"}]
    return [
        {"type": "websocket.http.response.start", "status": status, "headers": encoded},
        {"type": "websocket.http.response.body", "body": payload},
    ]


async def send_denial(
    scope: Scope, send: Send, status: int = 403, body: bytes | str = b"", headers: Headers | None = None
) -> bool:
    """Send ``denial_messages(scope, status, body, headers)``; returns whether an HTTP response was sent.

    Nothing is sent when the arguments are refused (the errors of ``denial_messages``).
    """
    messages = denial_messages(scope, status, body, headers)
    for message in messages:
        await send(message)
    return len(messages) > 1
