"""Session authentication: the user in ``scope["user"]``, the session hash checks of ``get_user``, ``login`` and
``logout`` with Django's signals, and logins over a WebSocket that a later HTTP request sees."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    authenticate,
    user_logged_in,
    user_logged_out,
)
from django.contrib.auth import logout as django_logout
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.db import SessionStore
from django.core.asgi import get_asgi_application
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import path

from tests.auth_support import (
    PASSWORD,
    AccountConsumer,
    SyncAccountConsumer,
    WhoAmIConsumer,
    cookie_header,
    create_user,
    fetch_json,
    scope_seen_by_inner,
    session_cookie_for,
    set_cookie_headers,
)
from tether.auth import (
    AuthMiddleware,
    AuthMiddlewareStack,
    UserLazyObject,
    alogin,
    alogout,
    get_user,
    login,
    logout,
)
from tether.db import database_sync_to_async
from tether.routing import ProtocolTypeRouter, URLRouter
from tether.security.websocket import AllowedHostsOriginValidator
from tether.sessions import _LazySession
from tether.testing import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
EMAIL_BACKEND = "tests.auth_support.EmailBackend"

websocket_routes = URLRouter(
    [
        path("ws/whoami/", WhoAmIConsumer.as_asgi()),
        path("ws/account/", AccountConsumer.as_asgi()),
        path("ws/sync-account/", SyncAccountConsumer.as_asgi()),
    ]
)
ws_app = AuthMiddlewareStack(websocket_routes)


@pytest.fixture
def alice(transactional_db) -> User:
    return create_user("alice", email="alice@example.com")


@pytest.fixture
def bob(transactional_db) -> User:
    return create_user("bob")


@pytest.fixture
def signals() -> Any:
    """Records every ``user_logged_in`` / ``user_logged_out`` signal sent during the test."""
    received: list[tuple[str, Any, Any]] = []

    def on_login(sender, user, request, **kwargs):
        received.append(("in", user, request))

    def on_logout(sender, user, request, **kwargs):
        received.append(("out", user, request))

    user_logged_in.connect(on_login)
    user_logged_out.connect(on_logout)
    yield received
    user_logged_in.disconnect(on_login)
    user_logged_out.disconnect(on_logout)


async def whoami(cookie: str | None = None, app: Any = ws_app) -> dict[str, Any]:
    headers = [cookie_header(cookie)] if cookie else []
    communicator = WebsocketCommunicator(app, "/ws/whoami/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    reply = await communicator.receive_json_from()
    await communicator.disconnect()
    return {key: reply[key] for key in ("authenticated", "username")}


async def open_account(cookie: str | None = None, path_: str = "/ws/account/") -> WebsocketCommunicator:
    headers = [cookie_header(cookie)] if cookie else []
    communicator = WebsocketCommunicator(ws_app, path_, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def cookie_for(user: User) -> str:
    return await database_sync_to_async(session_cookie_for)(user)


def session_store(session_key: str | None = None) -> Any:
    """A session as SessionMiddleware puts it in the scope: its async API works on every Django tether supports."""
    return _LazySession(SessionStore, session_key)


def ws_scope(session_key: str | None = None, scope_type: str = "websocket") -> dict[str, Any]:
    return {"type": scope_type, "session": session_store(session_key)}


async def stored_session(key: str) -> dict[str, Any]:
    """What the database holds for session ``key`` (empty when it is gone)."""
    return await database_sync_to_async(lambda: SessionStore(key).load())()


OLD_SECRET = "the-old-secret-key-0123456789"
ANONYMOUS = {"authenticated": False, "username": None}
ALICE = {"authenticated": True, "username": "alice"}


# --- AuthMiddleware and get_user ---------------------------------------------------------------------------------


async def test_no_session_cookie_gives_anonymous_user():
    assert await whoami() == ANONYMOUS


@pytest.mark.parametrize(
    "engine",
    [
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.cache",
        "django.contrib.sessions.backends.signed_cookies",
    ],
)
async def test_logged_in_session_gives_the_user(alice, engine):
    with override_settings(SESSION_ENGINE=engine):
        assert await whoami(await cookie_for(alice)) == ALICE


async def test_unknown_session_key_gives_anonymous_user():
    assert await whoami("nosuchsessionkeyatall00000000000") == ANONYMOUS


async def test_auth_middleware_without_session_says_to_use_the_stack():
    communicator = WebsocketCommunicator(AuthMiddleware(WhoAmIConsumer.as_asgi()), "/")
    with pytest.raises(ValueError, match=r"AuthMiddlewareStack\(\.\.\.\)"):
        await communicator.connect()


async def test_auth_middleware_passes_other_scope_types_through():
    seen = await scope_seen_by_inner(AuthMiddleware, {"type": "lifespan"})
    assert seen == {"type": "lifespan"}


async def test_scope_user_read_before_resolution_says_so():
    with pytest.raises(ValueError, match="before AuthMiddleware resolved it"):
        _ = UserLazyObject().is_authenticated


async def test_user_resolved_by_an_outer_auth_middleware_is_not_looked_up_again(alice):
    cookie = await cookie_for(alice)
    assert await whoami(cookie, app=AuthMiddlewareStack(AuthMiddleware(websocket_routes))) == ALICE


async def test_password_change_ends_the_session_and_flushes_it(alice):
    cookie = await cookie_for(alice)
    alice.set_password("a new password")
    await alice.asave()
    assert await whoami(cookie) == ANONYMOUS
    assert await stored_session(cookie) == {}


async def test_session_from_a_retired_secret_key_is_accepted_and_its_hash_upgraded(alice):
    with override_settings(SECRET_KEY=OLD_SECRET):
        cookie = await cookie_for(alice)
        old_hash = (await stored_session(cookie))[HASH_SESSION_KEY]
    with override_settings(SECRET_KEY="the-new-secret-key-0123456789", SECRET_KEY_FALLBACKS=[OLD_SECRET]):
        scope = ws_scope(cookie)
        user = await get_user(scope)
        assert user == alice
        # A WebSocket keeps its session key (the browser's cookie stays valid) and upgrades the hash in memory.
        assert scope["session"].session_key == cookie
        assert scope["session"][HASH_SESSION_KEY] == alice.get_session_auth_hash() != old_hash
        http_scope = ws_scope(cookie, scope_type="http")
        assert await get_user(http_scope) == alice
        assert http_scope["session"].session_key != cookie  # HTTP cycles it, as Django does


async def test_session_of_a_retired_secret_key_without_fallback_is_anonymous(alice):
    with override_settings(SECRET_KEY=OLD_SECRET):
        cookie = await cookie_for(alice)
    assert await whoami(cookie) == ANONYMOUS


async def test_backend_no_longer_configured_gives_anonymous_user(alice):
    cookie = await cookie_for(alice)
    with override_settings(AUTHENTICATION_BACKENDS=[EMAIL_BACKEND]):
        assert await whoami(cookie) == ANONYMOUS


async def test_deleted_user_gives_anonymous_user(alice):
    cookie = await cookie_for(alice)
    await alice.adelete()
    assert await whoami(cookie) == ANONYMOUS


async def test_inactive_user_gives_anonymous_user(alice):
    cookie = await cookie_for(alice)
    alice.is_active = False
    await alice.asave()
    assert await whoami(cookie) == ANONYMOUS


@pytest.mark.parametrize(
    "session_data",
    [
        {SESSION_KEY: "not-a-number", BACKEND_SESSION_KEY: MODEL_BACKEND},
        {SESSION_KEY: "1", BACKEND_SESSION_KEY: MODEL_BACKEND},
        {SESSION_KEY: "1", BACKEND_SESSION_KEY: MODEL_BACKEND, HASH_SESSION_KEY: "forged"},
        {SESSION_KEY: "1"},
    ],
    ids=["garbage-id", "no-hash", "wrong-hash", "no-backend"],
)
async def test_tampered_session_data_gives_anonymous_user(alice, session_data):
    session = session_store()
    for key, value in session_data.items():
        await session.aset(key, str(alice.pk) if value == "1" else value)
    await session.asave()
    assert await whoami(session.session_key) == ANONYMOUS


async def test_get_user_without_a_session_is_a_value_error():
    with pytest.raises(ValueError, match="AuthMiddlewareStack"):
        await get_user({"type": "websocket"})


async def test_session_logged_out_over_http_is_anonymous_over_websocket(alice):
    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = client.cookies["sessionid"].value
    assert await whoami(cookie) == ALICE
    with override_settings(ROOT_URLCONF="tests.test_auth"):
        await sync_to_async(client.get)("/logout/")
    assert await whoami(cookie) == ANONYMOUS


# --- login and logout --------------------------------------------------------------------------------------------


async def test_login_sets_scope_user_stores_the_session_and_sends_the_signal(alice, signals):
    scope = ws_scope()
    scope["user"] = AnonymousUser()
    await login(scope, alice, backend=MODEL_BACKEND)
    assert scope["user"] == alice
    session = scope["session"]
    assert session[SESSION_KEY] == str(alice.pk)
    assert session[BACKEND_SESSION_KEY] == MODEL_BACKEND
    assert session[HASH_SESSION_KEY] == alice.get_session_auth_hash()
    assert signals == [("in", alice, None)]
    await alice.arefresh_from_db()
    assert alice.last_login is not None


async def test_login_cycles_the_session_key_against_fixation(alice):
    planted = session_store()
    await planted.aset("cart", ["apples"])
    await planted.asave()
    scope = ws_scope(planted.session_key)
    await login(scope, alice)
    assert scope["session"].session_key != planted.session_key
    assert scope["session"]["cart"] == ["apples"]
    assert await stored_session(planted.session_key) == {}


async def test_login_as_another_user_starts_an_empty_session(alice, bob):
    scope = ws_scope(await cookie_for(bob))
    await scope["session"].aset("bobs-secret", 42)
    await login(scope, alice)
    assert "bobs-secret" not in scope["session"]
    assert scope["session"][SESSION_KEY] == str(alice.pk)


async def test_login_of_an_anonymous_user_is_a_value_error():
    scope = ws_scope()
    with pytest.raises(ValueError, match="authenticated user"):
        await login(scope, AnonymousUser())
    with pytest.raises(ValueError, match="authenticated user"):
        await login(scope, None)


async def test_login_with_several_backends_needs_to_know_which(alice):
    with override_settings(AUTHENTICATION_BACKENDS=[MODEL_BACKEND, EMAIL_BACKEND]):
        with pytest.raises(ValueError, match="Several AUTHENTICATION_BACKENDS"):
            await login(ws_scope(), alice)
        scope = ws_scope()
        await login(scope, alice, backend=EMAIL_BACKEND)
        assert scope["session"][BACKEND_SESSION_KEY] == EMAIL_BACKEND


async def test_login_with_a_backend_that_is_not_configured_is_a_value_error(alice):
    with pytest.raises(ValueError, match="not in AUTHENTICATION_BACKENDS"):
        await login(ws_scope(), alice, backend=EMAIL_BACKEND)


async def test_custom_backend_from_authenticate_is_recorded_and_accepted(alice):
    with override_settings(AUTHENTICATION_BACKENDS=[MODEL_BACKEND, EMAIL_BACKEND]):
        user = await database_sync_to_async(authenticate)(email="alice@example.com", password=PASSWORD)
        scope = ws_scope()
        await login(scope, user)
        await scope["session"].asave()
        assert scope["session"][BACKEND_SESSION_KEY] == EMAIL_BACKEND
        assert await whoami(scope["session"].session_key) == ALICE


async def test_logout_sends_the_signal_flushes_the_session_and_clears_the_user(alice, signals):
    cookie = await cookie_for(alice)
    scope = ws_scope(cookie)
    scope["user"] = await get_user(scope)
    signals.clear()  # the client's login
    await logout(scope)
    assert signals == [("out", alice, None)]
    assert scope["user"].is_authenticated is False
    assert scope["session"].session_key is None
    assert await stored_session(cookie) == {}


async def test_logout_of_an_anonymous_scope_sends_the_signal_without_a_user(signals):
    scope = ws_scope()
    scope["user"] = AnonymousUser()
    await logout(scope)
    assert signals == [("out", None, None)]


async def test_alogin_and_alogout_are_login_and_logout():
    assert alogin is login
    assert alogout is logout


async def test_login_over_websocket_is_not_persisted_without_save(alice):
    communicator = await open_account()
    await communicator.send_json_to({"login": "alice", "password": PASSWORD, "save": False})
    reply = await communicator.receive_json_from()
    await communicator.send_json_to({"whoami": True})
    assert await communicator.receive_json_from() == ALICE
    await communicator.disconnect()
    assert reply["logged_in"] is True
    assert await whoami(reply["session_key"]) == ANONYMOUS


async def test_login_over_websocket_then_save_persists_the_session(alice):
    communicator = await open_account()
    await communicator.send_json_to({"login": "alice", "password": PASSWORD})
    reply = await communicator.receive_json_from()
    await communicator.disconnect()
    assert await whoami(reply["session_key"]) == ALICE


async def test_wrong_password_over_websocket_logs_nobody_in(alice):
    communicator = await open_account()
    await communicator.send_json_to({"login": "alice", "password": "wrong"})
    assert (await communicator.receive_json_from())["logged_in"] is False
    await communicator.send_json_to({"whoami": True})
    assert await communicator.receive_json_from() == ANONYMOUS
    await communicator.disconnect()


async def test_sync_consumer_logs_in_with_async_to_sync(alice):
    communicator = await open_account(path_="/ws/sync-account/")
    await communicator.send_json_to({"login": "alice", "password": PASSWORD})
    reply = await communicator.receive_json_from()
    await communicator.disconnect()
    assert reply["username"] == "alice"
    assert await whoami(reply["session_key"]) == ALICE


async def test_logout_over_websocket_ends_the_session_everywhere(alice):
    cookie = await cookie_for(alice)
    communicator = await open_account(cookie)
    await communicator.send_json_to({"logout": True})
    assert (await communicator.receive_json_from())["logged_out"] is True
    await communicator.send_json_to({"whoami": True})
    assert await communicator.receive_json_from() == ANONYMOUS
    await communicator.disconnect()
    assert await whoami(cookie) == ANONYMOUS


# --- Over a real server, with Django views -----------------------------------------------------------------------


@pytest.fixture
def site(serve):
    """uvicorn serving Django views (``tests.auth_support`` URLs) and the WebSocket consumers behind the default
    stack; returns the server."""
    with override_settings(ROOT_URLCONF="tests.auth_support"):
        application = ProtocolTypeRouter(
            {"http": get_asgi_application(), "websocket": AllowedHostsOriginValidator(ws_app)}
        )
        yield serve(application)


async def http_whoami(server, cookie: str | None) -> dict[str, Any]:
    return await asyncio.to_thread(fetch_json, f"{server.url}/whoami/", cookie)


def same_origin(server) -> str:
    return f"http://127.0.0.1:{server.port}"


async def test_login_over_websocket_then_save_is_seen_by_a_later_http_request(alice, site):
    async with websockets.connect(f"{site.ws_url}/ws/account/", origin=same_origin(site)) as ws:
        await ws.send(json.dumps({"login": "alice", "password": PASSWORD}))
        reply = await ws.recv()
    session_key = json.loads(reply)["session_key"]
    assert await http_whoami(site, session_key) == ALICE


async def test_login_in_connect_sends_the_new_session_cookie_with_the_handshake(alice, live_serve):
    site = live_serve("tests.test_auth:site_application", urlconf="tests.auth_support")
    async with websockets.connect(f"{site.ws_url}/ws/account/?login=alice", origin=same_origin(site)) as ws:
        headers = set_cookie_headers(ws.response.headers)
    if site.kind == "granian":
        # granian (2.8) drops the headers of websocket.accept, this one included (docs/deploying.md says so).
        assert headers == []
        return
    (header,) = headers
    cookie = header.split(";")[0].removeprefix("sessionid=")
    assert "HttpOnly" in header or "SameSite=Lax" in header
    assert await http_whoami(site, cookie) == ALICE
    assert await http_whoami(site, None) == ANONYMOUS


#: The same stack by its import path, for ``live_serve`` (granian imports it in a process of its own).
site_application = ProtocolTypeRouter(
    {"http": get_asgi_application(), "websocket": AllowedHostsOriginValidator(ws_app)}
)


async def test_user_logged_in_over_http_is_the_websocket_user(alice, live_serve):
    # On uvicorn and granian: the session cookie of the handshake, read from the database the test wrote.
    site = live_serve("tests.test_auth:site_application", urlconf="tests.auth_support")
    cookie = await cookie_for(alice)
    async with websockets.connect(
        f"{site.ws_url}/ws/whoami/", origin=same_origin(site), additional_headers={"Cookie": f"sessionid={cookie}"}
    ) as ws:
        reply = json.loads(await ws.recv())
    assert {key: reply[key] for key in ("authenticated", "username")} == ALICE
    assert await http_whoami(site, cookie) == ALICE


async def test_logout_over_websocket_is_seen_by_a_later_http_request(alice, site):
    cookie = await cookie_for(alice)
    assert await http_whoami(site, cookie) == ALICE
    async with websockets.connect(
        f"{site.ws_url}/ws/account/", origin=same_origin(site), additional_headers={"Cookie": f"sessionid={cookie}"}
    ) as ws:
        await ws.send('{"logout": true}')
        await ws.recv()
    assert await http_whoami(site, cookie) == ANONYMOUS


def logout_view(request):
    django_logout(request)
    return HttpResponse("bye")


urlpatterns = [path("logout/", logout_view)]
