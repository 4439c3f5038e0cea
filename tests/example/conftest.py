"""Fixtures of the example project's consumer tests: users, rooms, and communicators that stand for browsers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, User

from chat.models import Room
from chat.routing import websocket_urlpatterns as chat_routes
from dashboard.inprocess import stop_worker
from dashboard.routing import websocket_urlpatterns as dashboard_routes
from tests.example.stream_client import PageClient
from tether.db import database_sync_to_async
from tether.ratelimit import limiter
from tether.routing import URLRouter
from tether.testing import WebsocketCommunicator

#: The example's WebSocket routes without the origin and auth middleware: tests put the user in the scope.
application = URLRouter(chat_routes + dashboard_routes)


@pytest.fixture(autouse=True)
def example_settings(settings: Any) -> None:
    settings.ROOT_URLCONF = "tests.example.urls"
    settings.DASHBOARD_TICKER = "in-process"
    settings.DASHBOARD_TICK_SECONDS = 0.05


@pytest.fixture(autouse=True)
def fresh_post_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with full post buckets and no refusal counted: users of different tests share primary keys."""
    monkeypatch.setattr(limiter, "_store", None)
    limiter.reset_counters()


@pytest.fixture
def make_user(transactional_db: None) -> Callable[[str], Any]:
    def make(username: str) -> User:
        return User.objects.create_user(username, password="pw")

    return database_sync_to_async(make)


@pytest.fixture
async def alice(make_user: Callable[[str], Any]) -> User:
    return await make_user("alice")


@pytest.fixture
async def bob(make_user: Callable[[str], Any]) -> User:
    return await make_user("bob")


@pytest.fixture
async def room(transactional_db: None) -> Room:
    return await database_sync_to_async(Room.objects.create)(name="lounge", topic="Testing")


@pytest.fixture
async def connect(transactional_db: None) -> AsyncIterator[Callable[..., Any]]:
    """``await connect(path, user)``: a connected communicator (the user in the scope); all closed at the end.

    It depends on ``transactional_db`` so that pytest tears it down first: the consumers' ``disconnect`` handlers and
    the in-process dashboard worker query the database, which must still be open when they run. Without the
    dependency a test that asked for ``connect`` before its user fixtures had the database closed under them.
    """
    opened: list[WebsocketCommunicator] = []

    async def open_connection(path: str, user: Any = None, expect: bool = True) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(application, path)
        communicator.scope["user"] = user or AnonymousUser()
        connected, _ = await communicator.connect()
        assert connected is expect
        opened.append(communicator)
        return communicator

    yield open_connection
    for communicator in opened:
        await communicator.disconnect()
    await stop_worker()


@pytest.fixture
def open_page(connect: Callable[..., Any]) -> Callable[..., Any]:
    """``await open_page(user)``: a page's connection (``chat/connect/``) as ``user`` (a guest by default), speaking
    the stream protocol through a ``PageClient``."""

    async def open_client(user: Any = None) -> PageClient:
        return PageClient(await connect("/chat/connect/", user))

    return open_client
