"""An HTTP consumer for responses that a Django view cannot give: long-poll and server-sent events.

``handle(body)`` runs once the whole request body has arrived. A response finished there ends the consumer; a
response left open (``send_body(..., more_body=True)``) keeps it running, so channel layer events can stream more body
parts until one is sent with ``more_body=False`` or the client goes away.
"""

from __future__ import annotations

import enum
from typing import Any

from tether.consumer import AsyncConsumer
from tether.exceptions import StopConsumer
from tether.generic.headers import Headers, encode_headers
from tether.types import Message, Receive, Scope, Send

__all__ = ["AsyncHttpConsumer", "ResponseState"]


class ResponseState(enum.Enum):
    """Where a consumer's HTTP response is: every event it may send next follows from this."""

    NOT_STARTED = "not started"  # nothing sent yet: http.response.start comes next
    STARTED = "started"  # the headers went out; body parts may follow
    FINISHED = "finished"  # the last body part went out (more_body=False): nothing more may be sent


class AsyncHttpConsumer(AsyncConsumer):
    """An asyncio HTTP consumer: override ``handle(body)`` and answer with ``send_response`` or the two steps."""

    body: list[bytes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Per-connection state is set here rather than in __init__, so that as_asgi() keeps checking initkwargs.
        self.body = []
        self.response_state = ResponseState.NOT_STARTED
        self._disconnected = False
        await super().__call__(scope, receive, send)

    async def send_headers(self, *, status: int = 200, headers: Headers | None = None) -> None:
        """Start the response. ``headers`` is a list of ``(name, value)`` pairs or a dict, as str or bytes."""
        if self.response_state is not ResponseState.NOT_STARTED:
            raise RuntimeError("send_headers() was called twice: the response has started already.")
        await self.send({"type": "http.response.start", "status": status, "headers": encode_headers(headers)})

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        """Send a part of the response body; ``more_body=True`` keeps the response open for more parts."""
        if not isinstance(body, (bytes, bytearray)):
            raise TypeError(f"send_body() takes bytes, not {type(body).__name__}; encode text first.")
        if self.response_state is ResponseState.NOT_STARTED:
            raise RuntimeError("send_body() was called before send_headers().")
        if self.response_state is ResponseState.FINISHED:
            raise RuntimeError("send_body() was called after the response finished (more_body=False).")
        await self.send({"type": "http.response.body", "body": bytes(body), "more_body": more_body})

    async def send_response(self, status: int, body: bytes, **kwargs: Any) -> None:
        """Send a whole response at once; ``kwargs`` go to ``send_headers`` (``headers=...``)."""
        await self.send_headers(status=status, **kwargs)
        await self.send_body(body)

    async def send(self, message: Message) -> None:
        if message.get("type") == "http.response.start":
            self.response_state = ResponseState.STARTED
        elif message.get("type") == "http.response.body" and not message.get("more_body", False):
            self.response_state = ResponseState.FINISHED
        await super().send(message)

    async def handle(self, body: bytes) -> None:
        """Answer the request; ``body`` is the whole request body."""
        raise NotImplementedError(f"{type(self).__name__} must define handle(self, body).")

    async def disconnect(self) -> None:
        """Called once, when the response is over or the client went away."""

    async def dispatch(self, message: Message) -> None:
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            await self._finish()
            raise
        if self.response_state is ResponseState.FINISHED:
            await self._finish()
            raise StopConsumer()

    async def http_request(self, message: Message) -> None:
        self.body.append(message.get("body", b""))
        if not message.get("more_body"):
            body, self.body = b"".join(self.body), []
            await self.handle(body)

    async def http_disconnect(self, message: Message) -> None:
        await self._finish()
        raise StopConsumer()

    async def _finish(self) -> None:
        if not self._disconnected:
            self._disconnected = True
            await self.disconnect()
