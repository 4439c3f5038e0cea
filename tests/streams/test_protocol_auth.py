"""``StreamConsumer`` behind the real auth middleware: ``authorize`` decides with the session's user, and presence
shows that user with the default hooks (their pk, and their username as metadata). Live: uvicorn in a thread, Django
sessions in the test database, ``websockets`` clients sending the session cookie."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from django.conf import settings
from django.urls import path

from tests.auth_support import create_user, session_cookie_for
from tests.conftest import LiveServer
from tests.streams.protocol_client import WAIT, ProtocolClient
from tether.auth import AuthMiddlewareStack
from tether.db import database_sync_to_async
from tether.routing import URLRouter
from tether.streams.consumer import StreamConsumer

pytestmark = pytest.mark.django_db(transaction=True)


class InboxStreams(StreamConsumer):
    """Each logged-in user may read their own inbox, ``inbox.<pk>``, and be present in ``lobby``; nobody else may."""

    async def authorize(self, stream: str, *, presence: bool) -> bool:
        user = self.scope["user"]
        if not user.is_authenticated:
            return False
        return stream in (f"inbox.{user.pk}", "lobby")


application = AuthMiddlewareStack(URLRouter([path("ws/inbox/", InboxStreams.as_asgi())]))


@pytest.fixture
def server(serve: Any) -> LiveServer:
    return serve(application)


@contextlib.asynccontextmanager
async def open_as(server: LiveServer, cookie: str | None) -> AsyncIterator[ProtocolClient]:
    """A client with the session cookie ``cookie`` (none: anonymous), closed on the way out."""
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"} if cookie else {}
    async with websockets.connect(
        f"{server.ws_url}/ws/inbox/", additional_headers=headers, open_timeout=WAIT, close_timeout=WAIT
    ) as ws:
        yield ProtocolClient(ws)


async def test_authorize_decides_with_the_session_s_user(server: LiveServer) -> None:
    ada = await database_sync_to_async(create_user)("ada")
    bob = await database_sync_to_async(create_user)("bob")
    cookie = await database_sync_to_async(session_cookie_for)(ada)
    async with open_as(server, cookie) as client:
        assert "result" in await client.subscribe(f"inbox.{ada.pk}")
        assert (await client.subscribe(f"inbox.{bob.pk}"))["error"]["code"] == "forbidden"


async def test_an_anonymous_connection_is_refused_by_an_authorize_that_needs_a_login(server: LiveServer) -> None:
    async with open_as(server, None) as client:
        assert (await client.subscribe("lobby"))["error"]["code"] == "forbidden"


async def test_presence_shows_the_session_s_user_with_the_default_hooks(server: LiveServer) -> None:
    ada = await database_sync_to_async(create_user)("ada")
    cookie = await database_sync_to_async(session_cookie_for)(ada)
    async with open_as(server, cookie) as client:
        await client.subscribe("lobby", presence=True)
        snapshot = await client.next_of("presence")
        assert snapshot["members"] == [{"user": str(ada.pk), "meta": {"username": "ada"}, "connections": 1}]
