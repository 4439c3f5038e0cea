"""Cookies and sessions: parsing, Set-Cookie building, lazy sessions saved on HTTP responses and only on request
over WebSockets, with the db, cache, cached_db and signed-cookie engines.

This module doubles as a session engine (``SESSION_ENGINE = "tests.test_sessions"``) whose store counts how often
it is built, to prove that an untouched session costs nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
import websockets
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import path
from django.utils.functional import empty

from tests.auth_support import cookie_header, scope_seen_by_inner, set_cookie_headers
from tether.generic.http import AsyncHttpConsumer
from tether.generic.websocket import AsyncJsonWebsocketConsumer
from tether.routing import URLRouter
from tether.sessions import (
    CookieMiddleware,
    SessionMiddleware,
    SessionMiddlewareStack,
    _async_session_method,
    _LazySession,
)
from tether.testing import HttpCommunicator, WebsocketCommunicator

ENGINES = [
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cache",
    "django.contrib.sessions.backends.cached_db",
    "django.contrib.sessions.backends.signed_cookies",
]


class SessionStore(DatabaseSessionStore):
    """A database session store that counts the stores built, for the laziness test."""

    built = 0

    def __init__(self, session_key: str | None = None) -> None:
        type(self).built += 1
        super().__init__(session_key)


async def session_http_app(scope, receive, send):
    """``/set/?v`` stores ``colour``, ``/read/`` returns it, ``/flush/`` flushes, ``/crash/`` sets it and answers 500,
    ``/untouched/`` leaves the session alone."""
    await receive()
    session = scope["session"]
    status, body = 200, b"ok"
    if scope["path"] == "/set/":
        await session.aset("colour", scope["query_string"].decode() or "blue")
    elif scope["path"] == "/read/":
        body = str(await session.aget("colour")).encode()
    elif scope["path"] == "/flush/":
        await session.aflush()
    elif scope["path"] == "/deleted-meanwhile/":
        await session.aset("colour", "grey")
        await Session.objects.filter(session_key=session.session_key).adelete()  # a logout in another tab
    elif scope["path"] == "/crash/":
        await session.aset("colour", "red")
        status = 500
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


class SessionConsumer(AsyncJsonWebsocketConsumer):
    """In ``connect()``: ``?cycle`` cycles the key and saves, ``?flush`` flushes. Frames set/read/save the session."""

    async def connect(self) -> None:
        session = self.scope["session"]
        if self.scope["query_string"] == b"cycle":
            await session.aset("renewed", True)  # a signed-cookie session's key only changes with its data
            await session.acycle_key()
            await session.asave()
        elif self.scope["query_string"] == b"flush":
            await session.aflush()
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        session = self.scope["session"]
        if "set" in content:
            await session.aset("colour", content["set"])
        if content.get("save"):
            await session.asave()
        await self.send_json({"colour": await session.aget("colour"), "session_key": session.session_key})


http_app = SessionMiddlewareStack(session_http_app)
ws_app = SessionMiddlewareStack(URLRouter([path("ws/session/", SessionConsumer.as_asgi())]))


async def http(path_and_query: str, cookie: str | None = None) -> dict[str, Any]:
    headers = [cookie_header(cookie)] if cookie is not None else []
    return await HttpCommunicator(http_app, "GET", path_and_query, headers=headers).get_response()


def session_cookie(response_headers: Any) -> str | None:
    """The value the response sets for the session cookie (None when it sets none)."""
    for header in set_cookie_headers(response_headers):
        match = re.match(rf"{settings.SESSION_COOKIE_NAME}=([^;]*)", header)
        if match:
            return match.group(1).strip('"')
    return None


def start_message(**extra: Any) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": [], **extra}


# --- CookieMiddleware --------------------------------------------------------------------------------------------


async def capture_scope(app_factory, communicator_factory) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def inner(scope, receive, send):
        seen.update(scope)
        await send({"type": "websocket.close"})

    communicator = communicator_factory(app_factory(inner))
    await communicator.connect()
    await communicator.wait()
    return seen


async def test_cookie_middleware_parses_the_cookie_header():
    scope = await capture_scope(
        CookieMiddleware, lambda app: WebsocketCommunicator(app, "/", headers=[(b"cookie", b'a=1; b="two words"')])
    )
    assert scope["cookies"] == {"a": "1", "b": "two words"}


async def test_cookie_middleware_joins_several_cookie_headers():
    headers = [(b"cookie", b"a=1"), (b"Cookie", b"b=2")]
    scope = await capture_scope(CookieMiddleware, lambda app: WebsocketCommunicator(app, "/", headers=headers))
    assert scope["cookies"] == {"a": "1", "b": "2"}


async def test_cookie_middleware_gives_an_empty_dict_without_a_cookie_header():
    scope = await capture_scope(CookieMiddleware, lambda app: WebsocketCommunicator(app, "/"))
    assert scope["cookies"] == {}


async def test_cookie_middleware_leaves_other_scope_types_alone():
    assert await scope_seen_by_inner(CookieMiddleware, {"type": "lifespan"}) == {"type": "lifespan"}


def test_set_cookie_defaults_to_root_path_and_samesite_lax():
    message = start_message()
    CookieMiddleware.set_cookie(message, "flavour", "oat")
    assert message["headers"] == [(b"set-cookie", b"flavour=oat; Path=/; SameSite=lax")]


def test_set_cookie_with_max_age_also_sets_expires():
    message = start_message()
    CookieMiddleware.set_cookie(message, "k", "v", max_age=datetime.timedelta(hours=1))
    header = set_cookie_headers(message["headers"])[0]
    assert "Max-Age=3600" in header
    assert re.search(r"expires=\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", header)


def test_set_cookie_with_a_datetime_expiry_computes_max_age():
    message = start_message()
    expires = datetime.datetime.now(tz=datetime.timezone.utc) + datetime.timedelta(seconds=120)
    CookieMiddleware.set_cookie(message, "k", "v", expires=expires)
    max_age = int(re.search(r"Max-Age=(\d+)", set_cookie_headers(message["headers"])[0]).group(1))
    assert 118 <= max_age <= 121


def test_set_cookie_writes_every_option():
    message = start_message(headers=[(b"content-type", b"text/plain")])
    CookieMiddleware.set_cookie(
        message, "k", "v", path="/app", domain="example.com", secure=True, httponly=True, samesite="Strict"
    )
    header = set_cookie_headers(message["headers"])[0]
    for part in ("k=v", "Path=/app", "Domain=example.com", "Secure", "HttpOnly", "SameSite=Strict"):
        assert part in header
    assert message["headers"][0] == (b"content-type", b"text/plain")


def test_set_cookie_quotes_values_that_need_it():
    message = start_message()
    CookieMiddleware.set_cookie(message, "k", "a value; with semicolon")
    assert set_cookie_headers(message["headers"])[0].startswith('k="a value\\073 with semicolon"')


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key": "bad key"}, "Cannot set cookie"),
        ({"key": "k", "samesite": "sometimes"}, "samesite must be"),
        ({"key": "k", "max_age": 5, "expires": datetime.datetime(2030, 1, 1)}, "not both"),
    ],
)
def test_set_cookie_refuses_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        CookieMiddleware.set_cookie(start_message(), **kwargs)


def test_set_cookie_refuses_messages_that_cannot_carry_headers():
    with pytest.raises(ValueError, match=r"http\.response\.body"):
        CookieMiddleware.set_cookie({"type": "http.response.body"}, "k", "v")


def test_delete_cookie_expires_it_now():
    message = start_message()
    CookieMiddleware.delete_cookie(message, "k", path="/app", domain="example.com")
    header = set_cookie_headers(message["headers"])[0]
    for part in ('k=""', "Max-Age=0", "expires=Thu, 01 Jan 1970 00:00:00 GMT", "Path=/app", "Domain=example.com"):
        assert part in header


def test_delete_cookie_marks_prefixed_cookies_secure():
    message = start_message()
    CookieMiddleware.delete_cookie(message, "__Host-id")
    assert "Secure" in set_cookie_headers(message["headers"])[0]


# --- SessionMiddleware over HTTP ---------------------------------------------------------------------------------


async def test_session_middleware_without_cookie_middleware_says_how_to_fix_it():
    communicator = HttpCommunicator(SessionMiddleware(session_http_app), "GET", "/read/")
    with pytest.raises(ValueError, match=r"SessionMiddlewareStack\(\.\.\.\)"):
        await communicator.get_response()


@override_settings(SESSION_ENGINE="tests.test_sessions")
async def test_untouched_session_builds_no_store_and_sets_no_cookie():
    SessionStore.built = 0
    seen: dict[str, Any] = {}

    async def app(scope, receive, send):
        seen["session"] = scope["session"]
        await session_http_app({**scope, "path": "/untouched/"}, receive, send)

    response = await HttpCommunicator(SessionMiddlewareStack(app), "GET", "/").get_response()
    assert SessionStore.built == 0
    assert seen["session"]._wrapped is empty
    assert session_cookie(response["headers"]) is None
    assert (b"vary", b"Cookie") not in response["headers"]


@override_settings(SESSION_ENGINE="tests.test_sessions.nowhere")
async def test_unimportable_session_engine_is_improperly_configured():
    with pytest.raises(ImproperlyConfigured, match=r"SESSION_ENGINE 'tests\.test_sessions\.nowhere'"):
        await http("/read/")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ENGINES)
async def test_modified_session_is_saved_and_its_cookie_set_on_the_http_response(engine):
    with override_settings(SESSION_ENGINE=engine):
        stored = await http("/set/?green")
        cookie = session_cookie(stored["headers"])
        assert cookie
        assert (b"vary", b"Cookie") in stored["headers"]
        assert (await http("/read/", cookie))["body"] == b"green"


@pytest.mark.django_db(transaction=True)
async def test_session_cookie_follows_the_session_cookie_settings():
    with override_settings(
        SESSION_COOKIE_NAME="tether_sid",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_DOMAIN="example.com",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_AGE=600,
    ):
        header = set_cookie_headers((await http("/set/"))["headers"])[0]
    assert header.startswith("tether_sid=")
    for part in ("Path=/app", "Domain=example.com", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=600"):
        assert part in header


@pytest.mark.django_db(transaction=True)
async def test_session_expiring_at_browser_close_gets_a_session_cookie():
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        header = set_cookie_headers((await http("/set/"))["headers"])[0]
    assert "Max-Age" not in header
    assert "expires" not in header


@pytest.mark.django_db(transaction=True)
async def test_session_is_not_saved_on_a_500_response():
    crashed = await http("/crash/")
    assert crashed["status"] == 500
    assert session_cookie(crashed["headers"]) is None


@pytest.mark.django_db(transaction=True)
async def test_session_deleted_during_the_request_is_answered_400_and_not_resurrected():
    cookie = session_cookie((await http("/set/"))["headers"])
    communicator = HttpCommunicator(http_app, "GET", "/deleted-meanwhile/", headers=[cookie_header(cookie)])
    response = await communicator.get_response()
    assert response["status"] == 400
    assert session_cookie(response["headers"]) is None
    assert (await http("/read/", cookie))["body"] == b"None"


@pytest.mark.django_db(transaction=True)
async def test_session_deleted_during_the_request_raises_session_interrupted_in_the_application():
    cookie = session_cookie((await http("/set/"))["headers"])
    communicator = HttpCommunicator(http_app, "GET", "/deleted-meanwhile/", headers=[cookie_header(cookie)])
    await communicator.get_response()
    with pytest.raises(SessionInterrupted, match="deleted while the request was being handled"):
        await communicator.wait()


async def stubborn_app(scope, receive, send):
    """Changes the session, which a logout elsewhere deletes; then sends its body even after being told."""
    await receive()
    await scope["session"].aset("colour", "grey")
    await Session.objects.filter(session_key=scope["session"].session_key).adelete()
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
    except SessionInterrupted:
        await send({"type": "http.response.body", "body": b"too late"})


@pytest.mark.django_db(transaction=True)
async def test_what_an_application_sends_after_the_session_400_does_not_reach_the_client():
    cookie = session_cookie((await http("/set/"))["headers"])
    communicator = HttpCommunicator(SessionMiddlewareStack(stubborn_app), "GET", "/", headers=[cookie_header(cookie)])
    response = await communicator.get_response()
    assert response["status"] == 400
    assert b"too late" not in response["body"]
    assert await communicator.receive_nothing()


class LogoutElsewhereConsumer(AsyncHttpConsumer):
    """Changes the session, which a logout in another tab deletes before the response goes out."""

    async def handle(self, body: bytes) -> None:
        await self.scope["session"].aset("colour", "grey")
        await Session.objects.filter(session_key=self.scope["session"].session_key).adelete()
        await self.send_response(200, b"saved?")


@pytest.mark.django_db(transaction=True)
async def test_an_http_consumer_whose_session_was_deleted_answers_400_over_a_real_server(serve):
    cookie = session_cookie((await http("/set/"))["headers"])
    server = serve(SessionMiddlewareStack(LogoutElsewhereConsumer.as_asgi()))

    def fetch() -> int:
        cookie_line = f"{settings.SESSION_COOKIE_NAME}={cookie}"
        request = urllib.request.Request(server.url + "/", headers={"Cookie": cookie_line})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert await asyncio.to_thread(fetch) == 400


@pytest.mark.django_db(transaction=True)
async def test_read_only_session_varies_on_cookie_without_saving():
    cookie = session_cookie((await http("/set/"))["headers"])
    response = await http("/read/", cookie)
    assert response["body"] == b"blue"
    assert (b"vary", b"Cookie") in response["headers"]
    assert session_cookie(response["headers"]) is None


@pytest.mark.django_db(transaction=True)
async def test_save_every_request_saves_a_read_only_session():
    cookie = session_cookie((await http("/set/"))["headers"])
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        response = await http("/read/", cookie)
    assert session_cookie(response["headers"]) == cookie


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ENGINES)
async def test_flushed_session_has_its_cookie_deleted_and_its_data_gone(engine):
    with override_settings(SESSION_ENGINE=engine):
        cookie = session_cookie((await http("/set/"))["headers"])
        flushed = await http("/flush/", cookie)
        assert session_cookie(flushed["headers"]) == ""
        assert "Max-Age=0" in set_cookie_headers(flushed["headers"])[0]
        if engine != "django.contrib.sessions.backends.signed_cookies":  # the old cookie holds its own data
            assert (await http("/read/", cookie))["body"] == b"None"


@pytest.mark.django_db(transaction=True)
async def test_only_the_outermost_session_middleware_saves():
    app = CookieMiddleware(SessionMiddleware(SessionMiddleware(session_http_app)))
    response = await HttpCommunicator(app, "GET", "/set/").get_response()
    assert len(set_cookie_headers(response["headers"])) == 1


# --- SessionMiddleware over WebSocket ----------------------------------------------------------------------------


async def ws_session(cookie: str | None = None, query: str = "") -> WebsocketCommunicator:
    headers = [cookie_header(cookie)] if cookie is not None else []
    communicator = WebsocketCommunicator(ws_app, f"/ws/session/?{query}", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ENGINES[:3])
async def test_websocket_session_changes_are_not_saved_automatically(engine):
    with override_settings(SESSION_ENGINE=engine):
        cookie = session_cookie((await http("/set/?blue"))["headers"])
        communicator = await ws_session(cookie)
        await communicator.send_json_to({"set": "purple"})
        assert (await communicator.receive_json_from())["colour"] == "purple"
        await communicator.disconnect()
        assert (await http("/read/", cookie))["body"] == b"blue"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ENGINES[:3])
async def test_websocket_session_saved_explicitly_is_seen_over_http(engine):
    with override_settings(SESSION_ENGINE=engine):
        cookie = session_cookie((await http("/set/?blue"))["headers"])
        communicator = await ws_session(cookie)
        await communicator.send_json_to({"set": "purple", "save": True})
        reply = await communicator.receive_json_from()
        await communicator.disconnect()
        assert reply["session_key"] == cookie
        assert (await http("/read/", cookie))["body"] == b"purple"


@pytest.mark.django_db(transaction=True)
async def test_signed_cookie_session_saved_after_accept_cannot_reach_the_browser():
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"):
        cookie = session_cookie((await http("/set/?blue"))["headers"])
        communicator = await ws_session(cookie)
        await communicator.send_json_to({"set": "purple", "save": True})
        reply = await communicator.receive_json_from()
        await communicator.disconnect()
        # The data lives in the cookie: the saved session is a new value that only the consumer knows.
        assert reply["session_key"] != cookie
        assert (await http("/read/", cookie))["body"] == b"blue"
        assert (await http("/read/", reply["session_key"]))["body"] == b"purple"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ENGINES)
async def test_session_key_changed_before_accept_rides_on_the_accept(engine):
    with override_settings(SESSION_ENGINE=engine):
        cookie = session_cookie((await http("/set/?blue"))["headers"])
        communicator = await ws_session(cookie, query="cycle")
        new_cookie = session_cookie(communicator.response_headers)
        await communicator.disconnect()
        assert new_cookie and new_cookie != cookie
        assert (await http("/read/", new_cookie))["body"] == b"blue"


@pytest.mark.django_db(transaction=True)
async def test_unchanged_session_key_adds_nothing_to_the_accept():
    cookie = session_cookie((await http("/set/"))["headers"])
    communicator = await ws_session(cookie)
    await communicator.send_json_to({})
    await communicator.receive_json_from()
    await communicator.disconnect()
    assert communicator.response_headers == []


@pytest.mark.django_db(transaction=True)
async def test_session_flushed_before_accept_deletes_the_cookie_on_the_accept():
    cookie = session_cookie((await http("/set/"))["headers"])
    communicator = await ws_session(cookie, query="flush")
    await communicator.disconnect()
    assert session_cookie(communicator.response_headers) == ""
    assert (await http("/read/", cookie))["body"] == b"None"


@pytest.mark.django_db(transaction=True)
async def test_session_cookie_set_on_the_accept_reaches_a_real_client(serve):
    cookie = session_cookie((await http("/set/?teal"))["headers"])
    server = serve(ws_app)
    async with websockets.connect(
        f"{server.ws_url}/ws/session/?cycle", additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    ) as ws:
        new_cookie = session_cookie(ws.response.headers)
    assert new_cookie and new_cookie != cookie
    assert (await http("/read/", new_cookie))["body"] == b"teal"


class StoreBeforeDjango51(dict):
    """A session store as Django 4.2 has them: the synchronous API only."""

    saved = False

    def save(self) -> None:
        self.saved = True


async def test_the_async_session_api_runs_the_sync_method_where_django_has_no_async_one():
    store = StoreBeforeDjango51()
    await _async_session_method(store, "aset")("colour", "teal")
    await _async_session_method(store, "asave")()
    assert store == {"colour": "teal"}
    assert store.saved
    assert await _async_session_method(store, "aget")("colour") == "teal"


def test_a_name_that_is_not_part_of_djangos_session_api_is_still_an_attribute_error():
    with pytest.raises(AttributeError):
        _async_session_method(StoreBeforeDjango51(), "afly")


@pytest.mark.django_db(transaction=True)
async def test_the_scope_session_offers_the_async_session_api_on_every_django():
    session = _LazySession(DatabaseSessionStore, None)
    await session.aset("colour", "teal")
    await session.asave()
    again = _LazySession(DatabaseSessionStore, session.session_key)
    assert await again.aget("colour") == "teal"
