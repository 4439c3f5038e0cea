"""BaseMiddleware: each connection gets its own copy of the scope, the wrapped app lives in ``inner``."""

from __future__ import annotations

import asyncio

import pytest
from django.urls import path

from tests.consumers import EchoConsumer
from tether.generic.websocket import AsyncJsonWebsocketConsumer
from tether.middleware import BaseMiddleware
from tether.routing import URLRouter
from tether.testing import WebsocketCommunicator


class TagMiddleware(BaseMiddleware):
    """Puts the connection's ``?tag=`` value into ``scope["tag"]``, the way a real middleware adds information."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        scope["tag"] = scope["query_string"].decode().removeprefix("tag=")
        await super().__call__(scope, receive, send)


class TagReporter(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send_json({"tag": self.scope.get("tag")})


def test_the_wrapped_application_is_kept_in_inner():
    app = EchoConsumer.as_asgi()
    assert BaseMiddleware(app).inner is app


def test_wrapping_something_that_is_not_an_application_is_a_type_error():
    with pytest.raises(TypeError, match="ASGI application"):
        BaseMiddleware("tests.consumers.EchoConsumer")


async def test_inner_gets_a_copy_of_the_scope():
    seen = {}

    async def inner(scope, receive, send):
        seen["scope"] = scope
        scope["added"] = True
        await send({"type": "websocket.close"})

    communicator = WebsocketCommunicator(BaseMiddleware(inner), "/")
    await communicator.connect()
    await communicator.wait()
    assert seen["scope"] is not communicator.scope
    assert seen["scope"]["path"] == "/"
    assert "added" not in communicator.scope


async def test_additions_never_leak_to_the_caller_or_between_connections():
    app = TagMiddleware(TagReporter.as_asgi())
    communicators = [WebsocketCommunicator(app, f"/?tag={name}") for name in ("red", "green", "blue")]
    results = await asyncio.gather(*(communicator.connect() for communicator in communicators))
    assert all(connected for connected, _ in results)
    tags = [(await communicator.receive_json_from())["tag"] for communicator in communicators]
    assert tags == ["red", "green", "blue"]
    for communicator in communicators:
        assert "tag" not in communicator.scope
        await communicator.disconnect()
    assert not hasattr(app, "scope")


async def test_url_router_nests_through_a_base_middleware():
    app = URLRouter([path("chat/", TagMiddleware(URLRouter([path("report/", TagReporter.as_asgi())])))])
    communicator = WebsocketCommunicator(app, "/chat/report/?tag=nested")
    assert (await communicator.connect())[0] is True
    assert await communicator.receive_json_from() == {"tag": "nested"}
    await communicator.disconnect()


async def test_base_middleware_passes_messages_both_ways_unchanged():
    communicator = WebsocketCommunicator(BaseMiddleware(EchoConsumer.as_asgi()), "/")
    assert await communicator.connect() == (True, None)
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert await communicator.receive_from() == b"\x00\x01"
    await communicator.disconnect()
