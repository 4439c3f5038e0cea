"""Test an HTTP application without a server: send one request, read the whole response."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tether.testing.application import ApplicationCommunicator
from tether.testing.scope import connection_scope
from tether.types import ASGIApp

__all__ = ["HttpCommunicator"]


class HttpCommunicator(ApplicationCommunicator):
    """Sends one HTTP request to an ASGI application and collects its response."""

    def __init__(
        self,
        application: ASGIApp,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, not {type(body).__name__}.")
        scope = connection_scope("http", "http", path, headers, method=method.upper())
        super().__init__(application, scope)
        self.body = body
        self.sent_request = False

    async def send_request(self) -> None:
        """Deliver the request body to the application."""
        self.sent_request = True
        await self.send_input({"type": "http.request", "body": self.body})

    async def get_response(self, timeout: float = 1) -> dict[str, Any]:
        """Send the request (once) and return ``{"status", "headers", "body"}`` with the whole body joined."""
        if not self.sent_request:
            await self.send_request()
        start = await self.receive_output(timeout)
        if start["type"] != "http.response.start":
            raise AssertionError(f"Expected 'http.response.start', but the application sent {start!r:.200}.")
        chunks = []
        while True:
            part = await self.receive_output(timeout)
            if part["type"] != "http.response.body":
                raise AssertionError(f"Expected 'http.response.body', but the application sent {part!r:.200}.")
            chunks.append(part.get("body", b""))
            if not part.get("more_body", False):
                break
        response = {key: value for key, value in start.items() if key != "type"}
        response.setdefault("headers", [])
        response["body"] = b"".join(chunks)
        return response
