"""A ``StreamConsumer`` application for the protocol tests (tests/streams/test_protocol*.py).

Served in the test process by uvicorn in a thread (imported as ``tests.project.project.streams_app``) and by uvicorn
processes of a copy of the test project (``project.streams_app:application``), so it imports nothing of ``project``.

The user is the query string's ``user`` (a stand-in for the auth middleware, which these tests do not exercise), and
the presence metadata the query string's ``name``. Who may subscribe: anyone to ``room.*``, only ``ada`` to
``private.ada``; ``missing.*`` streams do not exist (``not_found``); ``broken.*`` makes ``authorize`` raise.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import django
from django.urls import path

django.setup()

from tether.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from tether.streams import get_streams  # noqa: E402
from tether.streams.consumer import RequestError, StreamConsumer  # noqa: E402


class QueryStringUser:
    """An authenticated user named by the query string."""

    is_authenticated = True

    def __init__(self, name: str) -> None:
        self.pk = name
        self.username = name

    def get_username(self) -> str:
        return self.username


class QueryStringUserMiddleware:
    """Puts ``QueryStringUser(user)`` in the scope, as ``AuthMiddleware`` would put the session's user."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        query = parse_qs(scope["query_string"].decode())
        scope = dict(scope, user=QueryStringUser(query.get("user", ["anon"])[0]), query=query)
        await self.inner(scope, receive, send)


class RoomStreams(StreamConsumer):
    max_subscriptions = 20

    async def authorize(self, stream: str, *, presence: bool) -> bool:
        if stream.startswith("missing."):
            raise RequestError("not_found", f"There is no stream {stream!r}.")
        if stream.startswith("broken."):
            raise RuntimeError("the authorize hook failed")
        if stream.startswith("private."):
            return stream == "private." + self.scope["user"].username
        return stream.startswith("room.")

    def get_presence_meta(self) -> dict[str, Any]:
        return {"name": self.scope["query"].get("name", [""])[0], "server": self.scope["server"][1]}

    async def request_echo(self, params: dict[str, Any]) -> Any:
        return params

    async def request_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        """Publish ``count`` messages ``{"n": i}`` (i from ``first``, default 1) to ``stream``; the last position."""
        streams = get_streams(self.channel_layer)
        first = params.get("first", 1)
        position = None
        for n in range(first, first + params.get("count", 1)):
            position = await streams.publish(params["stream"], {"n": n})
        assert position is not None
        return {"epoch": position.epoch, "offset": position.offset}

    async def request_refuse(self, params: dict[str, Any]) -> None:
        raise RequestError("not_allowed", "Refused, as asked.")

    async def request_crash(self, params: dict[str, Any]) -> None:
        raise RuntimeError("a request handler failed")

    async def request_unencodable(self, params: dict[str, Any]) -> Any:
        return {"a set": {1, 2}}


class ThrottledRoomStreams(RoomStreams):
    """``RoomStreams`` taking 20 frames an hour from each connection (no refill within a test)."""

    rate_limits = {"messages_per_connection": "20/h"}


application = ProtocolTypeRouter(
    {
        "websocket": QueryStringUserMiddleware(
            URLRouter(
                [
                    path("ws/streams/", RoomStreams.as_asgi()),
                    path("ws/throttled/streams/", ThrottledRoomStreams.as_asgi()),
                ]
            )
        )
    }
)
