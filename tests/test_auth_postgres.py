"""Session and token authentication against PostgreSQL (127.0.0.1:5432): users and sessions live in the
``postgres`` database alias, routed there for these tests, and are read from the database thread.

Skipped, with the reason, when psycopg is missing or the server does not answer.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connections
from django.test import override_settings
from django.urls import path

from tests.auth_support import PASSWORD, AccountConsumer, WhoAmIConsumer, cookie_header, create_user, session_cookie_for
from tether.auth import AuthMiddlewareStack, TokenAuthMiddleware, make_token
from tether.db import database_sync_to_async
from tether.routing import URLRouter
from tether.testing import WebsocketCommunicator


def _why_postgres_is_unavailable() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'psycopg[binary]>=3.1' (the test extra has it)"
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        return f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc})"
    return None


_unavailable = _why_postgres_is_unavailable()
if _unavailable:
    pytest.skip(_unavailable, allow_module_level=True)

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "postgres"])

ws_app = AuthMiddlewareStack(
    TokenAuthMiddleware(
        URLRouter([path("ws/whoami/", WhoAmIConsumer.as_asgi()), path("ws/account/", AccountConsumer.as_asgi())])
    )
)
ALICE = {"authenticated": True, "username": "alice"}
ANONYMOUS = {"authenticated": False, "username": None}


class PostgresRouter:
    """Sends every model to the ``postgres`` alias."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "postgres"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "postgres"


@pytest.fixture
async def on_postgres():
    """Route the ORM to PostgreSQL; close the database thread's connections afterwards so the test database can be
    dropped at the end of the run."""
    with override_settings(DATABASE_ROUTERS=[PostgresRouter()]):
        yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def alice(on_postgres) -> User:
    return await database_sync_to_async(create_user)("alice")


async def ask(path_: str, cookie: str | None = None, message: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = [cookie_header(cookie)] if cookie else []
    communicator = WebsocketCommunicator(ws_app, path_, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    if message is not None:
        await communicator.send_json_to(message)
    reply = await communicator.receive_json_from()
    await communicator.disconnect()
    return reply


async def whoami(cookie: str | None = None, path_: str = "/ws/whoami/") -> dict[str, Any]:
    reply = await ask(path_, cookie)
    return {"authenticated": reply["authenticated"], "username": reply["username"]}


async def sessions_in(alias: str, key: str) -> int:
    return await Session.objects.using(alias).filter(session_key=key).acount()


async def test_the_postgres_alias_is_postgresql(on_postgres):
    assert connections["postgres"].vendor == "postgresql"
    assert await database_sync_to_async(lambda: connections["postgres"].settings_dict["NAME"])() != "test"


async def test_session_user_is_read_from_postgres(alice):
    cookie = await database_sync_to_async(session_cookie_for)(alice)
    assert await sessions_in("postgres", cookie) == 1
    assert await sessions_in("default", cookie) == 0
    assert await whoami(cookie) == ALICE


async def test_login_over_websocket_saves_the_session_in_postgres(alice):
    reply = await ask("/ws/account/", message={"login": "alice", "password": PASSWORD})
    assert reply["logged_in"] is True
    assert await sessions_in("postgres", reply["session_key"]) == 1
    assert await whoami(reply["session_key"]) == ALICE
    await alice.arefresh_from_db(using="postgres")
    assert alice.last_login is not None


async def test_password_change_in_postgres_ends_the_session(alice):
    cookie = await database_sync_to_async(session_cookie_for)(alice)
    alice.set_password("changed")
    await alice.asave()
    assert await whoami(cookie) == ANONYMOUS
    assert await sessions_in("postgres", cookie) == 0


async def test_logout_over_websocket_deletes_the_session_row(alice):
    cookie = await database_sync_to_async(session_cookie_for)(alice)
    reply = await ask("/ws/account/", cookie, message={"logout": True})
    assert reply["logged_out"] is True
    assert await sessions_in("postgres", cookie) == 0
    assert await whoami(cookie) == ANONYMOUS


async def test_token_user_is_read_from_postgres(alice):
    token = make_token(alice)
    assert await whoami(path_=f"/ws/whoami/?token={token}") == ALICE
    await alice.adelete()
    assert await whoami(path_=f"/ws/whoami/?token={token}") == ANONYMOUS
