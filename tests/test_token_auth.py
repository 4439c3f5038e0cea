"""Token authentication: ``make_token`` and ``TokenAuthMiddleware``, with the token in the query string or in the
``Sec-WebSocket-Protocol`` header; every bad token gives ``AnonymousUser`` and never an exception."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import time
from typing import Any

import pytest
import websockets
from django.contrib.auth.models import AnonymousUser, User
from django.core import signing
from django.core.asgi import get_asgi_application
from django.test import override_settings
from django.urls import path

from tests.auth_support import (
    WhoAmIConsumer,
    cookie_header,
    create_user,
    fetch_json,
    scope_seen_by_inner,
    session_cookie_for,
)
from tether.auth import AuthMiddlewareStack, TokenAuthMiddleware, make_token
from tether.db import database_sync_to_async
from tether.generic.websocket import AsyncJsonWebsocketConsumer
from tether.routing import ProtocolTypeRouter, URLRouter
from tether.testing import HttpCommunicator, WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)

whoami = WhoAmIConsumer.as_asgi()
token_app = TokenAuthMiddleware(whoami)

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
EMAIL_BACKEND = "tests.auth_support.EmailBackend"
OLD_SECRET = "the-old-secret-key-0123456789"
ANONYMOUS = {"authenticated": False, "username": None}
ALICE = {"authenticated": True, "username": "alice"}


class ChattyConsumer(AsyncJsonWebsocketConsumer):
    """Accepts with the ``chat`` subprotocol when the client offers it."""

    async def connect(self) -> None:
        await self.accept("chat" if "chat" in self.scope["subprotocols"] else None)


@pytest.fixture
def alice(transactional_db) -> User:
    return create_user("alice")


async def connect(
    app: Any = token_app, path_: str = "/", subprotocols: list[str] | None = None, headers: Any = None
) -> tuple[dict[str, Any], Any]:
    """Connect, return who the consumer says the user is and the subprotocol the handshake chose."""
    communicator = WebsocketCommunicator(app, path_, subprotocols=subprotocols, headers=headers)
    connected, subprotocol = await communicator.connect()
    assert connected
    reply = await communicator.receive_json_from()
    await communicator.disconnect()
    return {"authenticated": reply["authenticated"], "username": reply["username"], **_rest(reply)}, subprotocol


def _rest(reply: dict[str, Any]) -> dict[str, Any]:
    return {"subprotocols": reply["subprotocols"]} if reply["subprotocols"] else {}


async def user_for_query_token(token: str, app: Any = token_app) -> dict[str, Any]:
    return (await connect(app, f"/?token={token}"))[0]


# --- make_token --------------------------------------------------------------------------------------------------


def test_token_uses_only_characters_safe_in_urls_and_subprotocol_names(alice):
    token = make_token(alice)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
    assert len(token) < 200


def token_payload(token: str) -> dict[str, Any]:
    return signing.TimestampSigner(salt="tether.auth.TokenAuthMiddleware", sep=".").unsign_object(token)


def pieces(secret: str, width: int = 8) -> set[str]:
    """Every run of ``width`` characters of ``secret``: none may show in a token (a chance match is ~1e-7)."""
    return {secret[start : start + width] for start in range(len(secret) - width + 1)}


def test_token_exposes_no_part_of_the_session_auth_hash(alice):
    token = make_token(alice)
    readable = json.dumps(token_payload(token))
    assert token_payload(token)["u"] == str(alice.pk)
    for piece in pieces(alice.get_session_auth_hash()):
        assert piece not in readable
        assert piece not in token


def test_token_bound_to_a_session_exposes_neither_the_session_key_nor_the_hash(alice):
    session_key = session_cookie_for(alice)
    token = make_token(alice, session=session_key)
    readable = json.dumps(token_payload(token))
    for piece in pieces(session_key) | pieces(alice.get_session_auth_hash()):
        assert piece not in readable
        assert piece not in token
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
    assert make_token(alice, session=session_key) != token  # a fresh nonce each time


def test_make_token_refuses_a_session_without_a_key_or_of_another_user(alice):
    from django.contrib.sessions.backends.db import SessionStore

    with pytest.raises(ValueError, match="save it first"):
        make_token(alice, session=SessionStore())
    bob = create_user("bob")
    bobs = SessionStore(session_cookie_for(bob))
    with pytest.raises(ValueError, match="another user"):
        make_token(alice, session=bobs)


@pytest.mark.parametrize("user", [None, "anonymous", "unsaved"])
def test_make_token_needs_a_saved_authenticated_user(user):
    candidate = {None: None, "anonymous": AnonymousUser(), "unsaved": User(username="ghost")}[user]
    with pytest.raises(ValueError, match="saved, authenticated user"):
        make_token(candidate)


def test_make_token_with_several_backends_names_the_first_unless_told(alice):
    with override_settings(AUTHENTICATION_BACKENDS=[MODEL_BACKEND, EMAIL_BACKEND]):
        assert token_payload(make_token(alice))["b"] == MODEL_BACKEND
        assert token_payload(make_token(alice, backend=EMAIL_BACKEND))["b"] == EMAIL_BACKEND
        alice.backend = EMAIL_BACKEND
        assert token_payload(make_token(alice))["b"] == EMAIL_BACKEND


def test_make_token_refuses_a_backend_that_is_not_configured(alice):
    with pytest.raises(ValueError, match="not in AUTHENTICATION_BACKENDS"):
        make_token(alice, backend=EMAIL_BACKEND)


@pytest.mark.parametrize("max_age", [0, -5, float("nan"), "60", True])
def test_make_token_refuses_a_max_age_that_is_not_a_positive_duration(alice, max_age):
    with pytest.raises(ValueError, match="max_age must be a positive number"):
        make_token(alice, max_age=max_age)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_age": 0}, "max_age must be"),
        ({"max_age": 0.5}, "at least 1 second"),
        ({"query_param": ""}, "query_param must be"),
        ({"max_age": "1h"}, "max_age"),
    ],
)
def test_token_middleware_refuses_bad_options(kwargs, error):
    with pytest.raises(ValueError, match=error):
        TokenAuthMiddleware(whoami, **kwargs)


# --- Reading the token -------------------------------------------------------------------------------------------


async def test_token_in_the_query_string_authenticates(alice):
    assert await user_for_query_token(make_token(alice)) == ALICE


async def test_custom_query_parameter_is_honoured(alice):
    app = TokenAuthMiddleware(whoami, query_param="access")
    assert (await connect(app, f"/?room=1&access={make_token(alice)}"))[0] == ALICE
    assert (await connect(app, f"/?token={make_token(alice)}"))[0] == ANONYMOUS


async def test_token_in_a_subprotocol_authenticates_and_is_hidden_from_the_consumer(alice):
    user, subprotocol = await connect(subprotocols=["chat", f"token.{make_token(alice)}"])
    assert user == {**ALICE, "subprotocols": ["chat"]}
    assert subprotocol.startswith("token.")  # the consumer chose none; the middleware answers with the offered entry


async def test_subprotocol_the_consumer_chooses_is_kept(alice):
    app = TokenAuthMiddleware(ChattyConsumer.as_asgi())
    communicator = WebsocketCommunicator(app, "/", subprotocols=["chat", f"token.{make_token(alice)}"])
    assert await communicator.connect() == (True, "chat")
    await communicator.disconnect()


async def test_subprotocol_token_wins_over_the_query_string(alice):
    bob = await database_sync_to_async(create_user)("bob")
    user, _ = await connect(path_=f"/?token={make_token(bob)}", subprotocols=[f"token.{make_token(alice)}"])
    assert user == ALICE


async def test_two_subprotocol_tokens_are_refused(alice):
    token = make_token(alice)
    user, _ = await connect(subprotocols=[f"token.{token}", f"token.{token}"])
    assert user == ANONYMOUS


async def test_no_token_gives_anonymous_user():
    assert (await connect())[0] == ANONYMOUS


async def test_no_token_keeps_the_session_user_from_the_stack_in_front(alice):
    cookie = await database_sync_to_async(session_cookie_for)(alice)
    app = AuthMiddlewareStack(TokenAuthMiddleware(whoami))
    assert (await connect(app, headers=[cookie_header(cookie)]))[0] == ALICE


async def test_bad_token_overrides_the_session_user(alice):
    cookie = await database_sync_to_async(session_cookie_for)(alice)
    app = AuthMiddlewareStack(TokenAuthMiddleware(whoami))
    assert (await connect(app, "/?token=forged", headers=[cookie_header(cookie)]))[0] == ANONYMOUS


async def test_token_authenticates_an_http_request(alice):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["user"].get_username().encode()})

    communicator = HttpCommunicator(TokenAuthMiddleware(app), "GET", f"/?token={make_token(alice)}")
    assert (await communicator.get_response())["body"] == b"alice"


async def test_other_scope_types_pass_through():
    seen = await scope_seen_by_inner(TokenAuthMiddleware, {"type": "lifespan"})
    assert seen == {"type": "lifespan"}


# --- Tokens that must not work -----------------------------------------------------------------------------------


def tampered(token: str) -> str:
    payload, timestamp, signature = token.split(".")
    data = json.loads(signing.b64_decode(payload.encode()))
    data["u"] = str(int(data["u"]) + 1)
    forged = signing.b64_encode(json.dumps(data, separators=(",", ":")).encode()).decode()
    return f"{forged}.{timestamp}.{signature}"


async def test_forged_payload_gives_anonymous_user(alice):
    bob = await database_sync_to_async(create_user)("bob")
    assert bob.pk == alice.pk + 1
    assert await user_for_query_token(tampered(make_token(alice))) == ANONYMOUS


async def test_token_signed_with_another_key_gives_anonymous_user(alice):
    with override_settings(SECRET_KEY="somebody-elses-secret-key-0123456789"):
        token = make_token(alice)
    assert await user_for_query_token(token) == ANONYMOUS


async def test_value_signed_for_another_purpose_gives_anonymous_user(alice):
    token = signing.TimestampSigner(sep=".").sign_object({"u": str(alice.pk), "b": "x", "h": ""})
    assert await user_for_query_token(token) == ANONYMOUS


async def test_token_from_a_retired_secret_key_still_works_with_fallbacks(alice):
    with override_settings(SECRET_KEY=OLD_SECRET):
        token = make_token(alice)
    with override_settings(SECRET_KEY="the-new-secret-key-0123456789", SECRET_KEY_FALLBACKS=[OLD_SECRET]):
        assert await user_for_query_token(token) == ALICE


async def test_token_bound_to_a_session_survives_a_key_rotation_with_fallbacks(alice):
    with override_settings(SECRET_KEY=OLD_SECRET):  # the session too was signed with the retired key
        session_key = await database_sync_to_async(session_cookie_for)(alice)
        token = make_token(alice, session=session_key)
    with override_settings(SECRET_KEY="the-new-secret-key-0123456789", SECRET_KEY_FALLBACKS=[OLD_SECRET]):
        assert await user_for_query_token(token) == ALICE
    with override_settings(SECRET_KEY="the-new-secret-key-0123456789"):
        assert await user_for_query_token(token) == ANONYMOUS


@pytest.mark.parametrize(
    "garbage",
    ["", "x", "a.b", "a.b.c", "....", "%C3%A9t%C3%A9.1.2", "a" * 5000, "e30.1.x", "%00%01"],
    ids=["empty", "word", "two-parts", "three-parts", "dots", "unicode", "huge", "empty-object", "nul-bytes"],
)
async def test_malformed_token_gives_anonymous_user_without_an_exception(garbage):
    assert await user_for_query_token(garbage) == ANONYMOUS


async def sleep_until_older_than(token: str, seconds: float) -> None:
    """Sleep until the token's signing time (whole seconds) is more than ``seconds`` ago."""
    signed_at = signing.b62_decode(token.split(".")[1])
    await asyncio.sleep(max(0.0, signed_at + seconds + 0.05 - time.time()))


async def test_token_older_than_the_middleware_max_age_gives_anonymous_user(alice):
    token = make_token(alice)
    app = TokenAuthMiddleware(whoami, max_age=1)
    assert await user_for_query_token(token, app) == ALICE
    await sleep_until_older_than(token, 1)
    assert await user_for_query_token(token, app) == ANONYMOUS


async def test_token_past_its_own_max_age_gives_anonymous_user(alice):
    token = make_token(alice, max_age=datetime.timedelta(seconds=0.3))
    assert await user_for_query_token(token) == ALICE
    await asyncio.sleep(0.4)
    assert await user_for_query_token(token) == ANONYMOUS


async def test_password_change_invalidates_the_token(alice):
    token = make_token(alice)
    alice.set_password("something new")
    await alice.asave()
    assert await user_for_query_token(token) == ANONYMOUS


async def test_token_bound_to_a_session_works_while_the_session_lives(alice):
    session_key = await database_sync_to_async(session_cookie_for)(alice)
    token = make_token(alice, session=session_key)
    assert await user_for_query_token(token) == ALICE


async def test_token_bound_to_a_session_is_refused_after_a_logout(alice):
    """A Django logout view deletes the session: the token made from it stops working."""
    visitor = await database_sync_to_async(_logged_in_client)(alice)
    token = make_token(alice, session=visitor.session.session_key)
    assert await user_for_query_token(token) == ALICE
    await database_sync_to_async(visitor.logout)()
    assert await user_for_query_token(token) == ANONYMOUS


async def test_token_bound_to_a_session_is_refused_after_tether_logout(alice):
    from tether.auth import logout

    session_key = await database_sync_to_async(session_cookie_for)(alice)
    token = make_token(alice, session=session_key)
    from django.contrib.sessions.backends.db import SessionStore

    scope = {"type": "websocket", "session": SessionStore(session_key), "user": alice}
    await logout(scope)
    assert await user_for_query_token(token) == ANONYMOUS


async def test_token_is_refused_after_a_password_change_even_when_bound(alice):
    session_key = await database_sync_to_async(session_cookie_for)(alice)
    token = make_token(alice, session=session_key)
    alice.set_password("another password")
    await alice.asave()
    assert await user_for_query_token(token) == ANONYMOUS


def _logged_in_client(user: Any) -> Any:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


async def test_token_of_a_deleted_user_gives_anonymous_user(alice):
    token = make_token(alice)
    await alice.adelete()
    assert await user_for_query_token(token) == ANONYMOUS


async def test_token_of_an_inactive_user_gives_anonymous_user(alice):
    token = make_token(alice)
    alice.is_active = False
    await alice.asave()
    assert await user_for_query_token(token) == ANONYMOUS


async def test_token_naming_a_backend_no_longer_configured_gives_anonymous_user(alice):
    token = make_token(alice)
    with override_settings(AUTHENTICATION_BACKENDS=[EMAIL_BACKEND]):
        assert await user_for_query_token(token) == ANONYMOUS


async def test_refused_token_is_logged_without_its_value(alice, caplog):
    caplog.set_level("INFO", logger="tether.token_auth")
    token = tampered(make_token(alice))
    await user_for_query_token(token)
    assert "Refused an auth token" in caplog.text
    assert token not in caplog.text


# --- Over a real server ------------------------------------------------------------------------------------------


async def test_browser_style_subprotocol_token_over_uvicorn(alice, serve):
    server = serve(TokenAuthMiddleware(URLRouter([path("ws/whoami/", whoami)])))
    entry = f"token.{make_token(alice)}"
    async with websockets.connect(f"{server.ws_url}/ws/whoami/", subprotocols=[entry]) as ws:
        reply = json.loads(await ws.recv())
        assert ws.subprotocol == entry
    assert {key: reply[key] for key in ("authenticated", "username")} == ALICE
    assert reply["subprotocols"] == []


async def test_expired_token_over_uvicorn_connects_as_anonymous(alice, serve):
    server = serve(TokenAuthMiddleware(URLRouter([path("ws/whoami/", whoami)]), max_age=1))
    token = make_token(alice)
    await sleep_until_older_than(token, 1)
    async with websockets.connect(f"{server.ws_url}/ws/whoami/?token={token}") as ws:
        reply = json.loads(await ws.recv())
    assert reply["authenticated"] is False


async def test_token_from_a_django_view_authenticates_a_websocket_over_uvicorn(alice, serve):
    cookie = await database_sync_to_async(session_cookie_for)(alice)
    with override_settings(ROOT_URLCONF="tests.auth_support"):
        server = serve(
            ProtocolTypeRouter(
                {"http": get_asgi_application(), "websocket": TokenAuthMiddleware(URLRouter([path("ws/", whoami)]))}
            )
        )
        token = (await asyncio.to_thread(fetch_json, f"{server.url}/websocket-token/", cookie))["token"]
        async with websockets.connect(f"{server.ws_url}/ws/", subprotocols=[f"token.{token}"]) as ws:
            reply = json.loads(await ws.recv())
    assert reply["username"] == "alice"
