"""Test a WebSocket application without a server: connect, exchange frames, disconnect."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tether.testing.application import ApplicationCommunicator
from tether.testing.scope import connection_scope
from tether.types import ASGIApp

__all__ = ["WebsocketCommunicator"]


class WebsocketCommunicator(ApplicationCommunicator):
    """Talks to a WebSocket ASGI application the way a server would.

    ``path`` may carry a query string. ``headers`` is a list of ``(bytes, bytes)`` pairs, ``subprotocols`` the
    protocols the client offers, ``spec_version`` the ASGI WebSocket spec version to announce in the scope.
    """

    def __init__(
        self,
        application: ASGIApp,
        path: str,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
        subprotocols: Iterable[str] | None = None,
        spec_version: str | None = None,
    ) -> None:
        scope = connection_scope("websocket", "ws", path, headers, subprotocols=list(subprotocols or []))
        if spec_version:
            scope["asgi"]["spec_version"] = spec_version
        super().__init__(application, scope)
        self.response_headers: list[tuple[bytes, bytes]] | None = None

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """Open the connection: ``(True, subprotocol)`` when accepted, ``(False, close_code)`` when refused."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.accept":
            self.response_headers = list(response.get("headers", []))
            return True, response.get("subprotocol")
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        if response["type"] == "websocket.http.response.start":
            return False, response.get("status")
        raise AssertionError(f"Expected the application to accept or close, but it sent {response!r:.200}.")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame from the client: text or bytes, exactly one of them."""
        if (text_data is None) == (bytes_data is None):
            raise ValueError("send_to() takes exactly one of text_data or bytes_data.")
        if text_data is not None:
            if not isinstance(text_data, str):
                raise TypeError(f"text_data must be a str, not {type(text_data).__name__}.")
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            if not isinstance(bytes_data, bytes):
                raise TypeError(f"bytes_data must be bytes, not {type(bytes_data).__name__}.")
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def send_json_to(self, data: Any) -> None:
        """Send ``data`` encoded as JSON in a text frame."""
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        """The payload of the next frame the application sent (str for text frames, bytes for binary ones)."""
        response = await self.receive_output(timeout)
        if response["type"] != "websocket.send":
            raise AssertionError(f"Expected a 'websocket.send' event, but the application sent {response!r:.200}.")
        if ("text" in response and response["text"] is not None) == (
            "bytes" in response and response["bytes"] is not None
        ):
            raise AssertionError(f"A websocket.send event needs exactly one of 'text' or 'bytes': {response!r:.200}.")
        if response.get("text") is not None:
            if not isinstance(response["text"], str):
                raise AssertionError(f"Text frame payload is not a str: {response['text']!r:.100}.")
            return response["text"]
        if not isinstance(response["bytes"], bytes):
            raise AssertionError(f"Binary frame payload is not bytes: {response['bytes']!r:.100}.")
        return response["bytes"]

    async def receive_json_from(self, timeout: float = 1) -> Any:
        """The next text frame the application sent, decoded from JSON."""
        payload = await self.receive_from(timeout)
        if not isinstance(payload, str):
            raise AssertionError(f"Expected a JSON text frame, but got a binary one: {payload!r:.100}.")
        return json.loads(payload)

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """Close the connection from the client's side and wait for the application to finish."""
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
