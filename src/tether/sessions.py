"""Cookies and Django sessions for HTTP and WebSocket connections served by tether.

``CookieMiddleware`` parses the ``Cookie`` header into ``scope["cookies"]``; ``SessionMiddleware`` turns the session
cookie into a Django session in ``scope["session"]``, using the project's ``SESSION_ENGINE`` and ``SESSION_COOKIE_*``
settings, so consumers share sessions with Django views.

The session is lazy: the session store is not built, let alone queried, until a consumer touches it. On HTTP the
middleware saves a modified session when the response starts, and sets (or deletes) the cookie, as Django's own
session middleware does. A WebSocket has no response to carry a cookie once it is open, so its session is never saved
automatically: call ``scope["session"].save()`` (or ``await scope["session"].asave()``) yourself. When the session
key changes before the connection is accepted (a login in ``connect()`` cycles it), the new cookie rides on the
handshake response so the browser keeps up (tether-only).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import MutableMapping
from http.cookies import CookieError, SimpleCookie
from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.core.exceptions import ImproperlyConfigured
from django.http.cookie import parse_cookie
from django.utils.functional import LazyObject, empty
from django.utils.http import http_date

from tether.db import database_sync_to_async
from tether.middleware import BaseMiddleware
from tether.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CookieMiddleware", "SessionMiddleware", "SessionMiddlewareStack"]

logger = logging.getLogger("tether.sessions")

#: Scope types that carry HTTP headers, and so cookies. Other scopes (lifespan, worker channels) pass through.
_COOKIE_SCOPE_TYPES = frozenset({"http", "websocket"})
#: Response messages whose headers may carry ``Set-Cookie``.
_COOKIE_MESSAGE_TYPES = frozenset({"http.response.start", "websocket.accept"})
_SAMESITE_VALUES = frozenset({"lax", "strict", "none"})
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


def _cookies_from_headers(headers: Any) -> dict[str, str]:
    """Parse every ``Cookie`` header of an ASGI header list (HTTP/2 may split them) into one dict."""
    values = [value.decode("latin-1") for name, value in headers or () if name.lower() == b"cookie"]
    return parse_cookie("; ".join(values)) if values else {}


def _has_set_cookie(message: Message, key: str) -> bool:
    prefix = f"{key}=".encode("latin-1")
    return any(
        name.lower() == b"set-cookie" and value.lstrip().startswith(prefix)
        for name, value in message.get("headers") or ()
    )


class CookieMiddleware(BaseMiddleware):
    """Put the request's cookies, parsed as Django parses them, in ``scope["cookies"]`` (a dict of str to str).

    HTTP and WebSocket scopes only; other scope types pass through untouched. The classmethods ``set_cookie`` and
    ``delete_cookie`` add ``Set-Cookie`` headers to a response start message.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        if scope.get("type") in _COOKIE_SCOPE_TYPES:
            scope["cookies"] = _cookies_from_headers(scope.get("headers"))
        await self.inner(scope, receive, send)

    @classmethod
    def set_cookie(
        cls,
        message: Message,
        key: str,
        value: str = "",
        max_age: int | float | datetime.timedelta | None = None,
        expires: str | datetime.datetime | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header to ``message`` (an ``http.response.start`` or ``websocket.accept`` message).

        The options mean what they mean in Django's ``HttpResponse.set_cookie``: ``max_age`` in seconds (or a
        timedelta) also sets ``expires``; ``expires`` is an HTTP date string or a datetime (naive means UTC), and
        cannot be combined with ``max_age``; ``samesite`` is ``"lax"``, ``"strict"``, ``"none"`` or None to leave it
        out. Raises ``ValueError`` for another message type, an invalid cookie name or an unknown ``samesite``.
        """
        if message.get("type") not in _COOKIE_MESSAGE_TYPES:
            raise ValueError(
                f"Cookies can only be set on an 'http.response.start' or 'websocket.accept' message, "
                f"not on {message.get('type')!r}."
            )
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie[key] = value
        except CookieError as exc:
            raise ValueError(f"Cannot set cookie {key!r}: {exc}") from None
        morsel = cookie[key]
        if isinstance(expires, datetime.datetime):
            if max_age is not None:
                raise ValueError("set_cookie() takes 'expires' or 'max_age', not both.")
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=datetime.timezone.utc)
            # One second more so the date string matches after the fraction of a second is lost.
            remaining = expires - datetime.datetime.now(tz=datetime.timezone.utc) + datetime.timedelta(seconds=1)
            max_age, expires = max(0, int(remaining.total_seconds())), None
        if isinstance(max_age, datetime.timedelta):
            max_age = max_age.total_seconds()
        if max_age is not None:
            morsel["max-age"] = int(max_age)
            if not expires:
                expires = http_date(time.time() + max_age)
        if expires:
            morsel["expires"] = expires
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite:
            if samesite.lower() not in _SAMESITE_VALUES:
                raise ValueError(f"samesite must be 'lax', 'strict' or 'none', not {samesite!r}.")
            morsel["samesite"] = samesite
        headers = list(message.get("headers") or [])
        headers.append((b"set-cookie", morsel.OutputString().encode("latin-1")))
        message["headers"] = headers

    @classmethod
    def delete_cookie(cls, message: Message, key: str, path: str | None = "/", domain: str | None = None) -> None:
        """Add a ``Set-Cookie`` header to ``message`` that makes the browser drop cookie ``key``.

        ``path`` and ``domain`` must match the ones the cookie was set with. Cookies named ``__Secure-...`` or
        ``__Host-...`` are deleted with the ``Secure`` flag, without which browsers ignore the header.
        """
        cls.set_cookie(
            message,
            key,
            max_age=0,
            expires=_EXPIRED,
            path=path,
            domain=domain,
            secure=key.startswith(("__Secure-", "__Host-")),
        )


if TYPE_CHECKING:
    _LazyStore = LazyObject[SessionBase]
else:  # Django's LazyObject is generic only in django-stubs, not at run time.
    _LazyStore = LazyObject


#: Django's asynchronous session methods (5.1 and later). Each runs the synchronous method of the same name without
#: its leading "a" (``aset`` is ``__setitem__``).
_ASYNC_SESSION_METHODS = frozenset(
    {
        "aget", "aset", "apop", "asetdefault", "aupdate", "ahas_key", "akeys", "avalues", "aitems", "aclear",
        "aflush", "acycle_key", "asave", "adelete", "aexists", "acreate", "aload", "aset_expiry", "aget_expiry_age",
        "aget_expiry_date", "aget_expire_at_browser_close", "aset_test_cookie", "atest_cookie_worked",
        "adelete_test_cookie",
    }
)  # fmt: skip


def _async_session_method(store: Any, name: str) -> Any:
    """``store``'s asynchronous method ``name``; on a Django without it (before 5.1), its synchronous counterpart
    run in the database thread, so ``await scope["session"].aset(...)`` works on every Django tether supports."""
    try:
        return getattr(store, name)
    except AttributeError:
        if name not in _ASYNC_SESSION_METHODS:
            raise
        return database_sync_to_async(getattr(store, "__setitem__" if name == "aset" else name[1:]))


class _LazySession(_LazyStore):
    """``scope["session"]``: builds the Django session store on first use, so unused sessions cost nothing.

    It also offers Django's asynchronous session methods (``aget``, ``aset``, ``asave``...) on Django 4.2, where
    the stores do not have them yet.
    """

    def __init__(self, store_class: type[SessionBase], session_key: str | None) -> None:
        super().__init__()
        self.__dict__["_store_class"] = store_class
        self.__dict__["_cookie_session_key"] = session_key

    def _setup(self) -> None:
        self._wrapped = self.__dict__["_store_class"](self.__dict__["_cookie_session_key"])

    def __getattr__(self, name: str) -> Any:
        if self._wrapped is empty:
            self._setup()
        return _async_session_method(self._wrapped, name)


def _built_store(session: _LazySession) -> SessionBase | None:
    """The session store behind ``session``, or None when nothing has touched the session."""
    store = session.__dict__["_wrapped"]
    return None if store is empty else store


def _session_store_class() -> type[SessionBase]:
    engine_path = settings.SESSION_ENGINE
    try:
        store_class: type[SessionBase] = import_module(engine_path).SessionStore
        return store_class
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(
            f"SESSION_ENGINE {engine_path!r} cannot be used: {exc}. Set it to a session engine module such as "
            "'django.contrib.sessions.backends.db'."
        ) from exc


def _cookie_expiry(store: SessionBase) -> tuple[int | None, str | None]:
    """The ``max_age`` and ``expires`` of the session cookie, as Django's session middleware computes them."""
    if store.get_expire_at_browser_close():
        return None, None
    max_age = store.get_expiry_age()
    return max_age, http_date(time.time() + max_age)


def _set_session_cookie(message: Message, store: SessionBase) -> None:
    max_age, expires = _cookie_expiry(store)
    CookieMiddleware.set_cookie(
        message,
        settings.SESSION_COOKIE_NAME,
        store.session_key or "",
        max_age=max_age,
        expires=expires,
        path=settings.SESSION_COOKIE_PATH,
        domain=settings.SESSION_COOKIE_DOMAIN,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=settings.SESSION_COOKIE_HTTPONLY,
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )


def _delete_session_cookie(message: Message) -> None:
    CookieMiddleware.delete_cookie(
        message, settings.SESSION_COOKIE_NAME, path=settings.SESSION_COOKIE_PATH, domain=settings.SESSION_COOKIE_DOMAIN
    )


def _add_vary_cookie(message: Message) -> None:
    headers = list(message.get("headers") or [])
    for name, value in headers:
        if name.lower() == b"vary" and (b"cookie" in value.lower() or value.strip() == b"*"):
            return
    headers.append((b"vary", b"Cookie"))
    message["headers"] = headers


def _save_and_set_cookie(message: Message, store: SessionBase) -> None:
    """Save the session and put its cookie on ``message``; runs in the ORM's thread.

    Raises Django's ``SessionInterrupted`` when the session was deleted meanwhile (a logout in another tab), rather
    than saving it again and undoing that logout.
    """
    try:
        store.save()
    except UpdateError:
        raise SessionInterrupted(
            "The session was deleted while the request was being handled (a logout in another tab?), so it was "
            "not saved again; the client was answered 400 Bad Request."
        ) from None
    _set_session_cookie(message, store)


async def _answer_session_interrupted(send: Send) -> None:
    """Answer 400 Bad Request, as Django does when a request's session was deleted before it could be saved."""
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"vary", b"Cookie")],
        }
    )
    await send({"type": "http.response.body", "body": b"Bad Request: the session ended during the request."})


async def _finish_http_session(message: Message, store: SessionBase, request_cookie: str | None) -> None:
    """Save a modified session and set or delete its cookie on an ``http.response.start`` message."""
    if request_cookie is not None and store.is_empty():
        _delete_session_cookie(message)
        _add_vary_cookie(message)
        return
    if store.accessed:
        _add_vary_cookie(message)
    wants_save = store.modified or settings.SESSION_SAVE_EVERY_REQUEST
    if wants_save and not store.is_empty() and message.get("status", 200) < 500:
        await database_sync_to_async(_save_and_set_cookie)(message, store)


async def _send_changed_key_on_accept(message: Message, store: SessionBase, request_cookie: str | None) -> None:
    """Put the session cookie on the handshake response when the key changed before ``accept()``."""
    if store.session_key == request_cookie or _has_set_cookie(message, settings.SESSION_COOKIE_NAME):
        return
    if store.session_key is None:
        _delete_session_cookie(message)
    else:
        await database_sync_to_async(_set_session_cookie)(message, store)


class SessionMiddleware(BaseMiddleware):
    """Put a lazily loaded Django session in ``scope["session"]``; needs ``CookieMiddleware`` in front of it.

    The session store comes from ``SESSION_ENGINE`` and the key from the ``SESSION_COOKIE_NAME`` cookie. Nothing is
    built or queried until the session is used.

    HTTP: when the response starts, a modified session (any session with ``SESSION_SAVE_EVERY_REQUEST``) is saved
    and its cookie set, an emptied (flushed) one has its cookie deleted, and ``Vary: Cookie`` is added when the
    session was read; nothing is saved for 5xx responses.

    WebSocket: the session is never saved for you; call ``save()`` / ``await asave()``. If the session key changed
    before ``accept()`` (``login()`` in ``connect()`` cycles it), the accept response carries the new cookie, or
    deletes it when the session was flushed; after ``accept()`` no cookie can reach the browser.

    Only the outermost ``SessionMiddleware`` acts; one nested inside another passes the connection through.
    Raises ``ValueError`` when ``scope["cookies"]`` is missing.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        if scope.get("type") not in _COOKIE_SCOPE_TYPES or "session" in scope:
            await self.inner(scope, receive, send)
            return
        cookies = scope.get("cookies")
        if not isinstance(cookies, MutableMapping):
            raise ValueError(
                "SessionMiddleware found no cookies in the scope: it needs CookieMiddleware in front of it. "
                "Wrap your application in SessionMiddlewareStack(...) (or AuthMiddlewareStack(...))."
            )
        request_cookie = cookies.get(settings.SESSION_COOKIE_NAME)
        session = _LazySession(_session_store_class(), request_cookie)
        scope["session"] = session

        interrupted = False

        async def send_with_session(message: Message) -> None:
            nonlocal interrupted
            if interrupted and message["type"].startswith("http.response."):
                return  # the client had its 400 already; what the application sends after it has nowhere to go
            store = _built_store(session)
            if store is not None:
                if message["type"] == "http.response.start":
                    try:
                        await _finish_http_session(message, store, request_cookie)
                    except SessionInterrupted:
                        # The client gets Django's answer at once; the application learns why its response was
                        # replaced from the exception, as it would from Django's SessionMiddleware.
                        interrupted = True
                        await _answer_session_interrupted(send)
                        raise
                elif message["type"] == "websocket.accept":
                    await _send_changed_key_on_accept(message, store, request_cookie)
            await send(message)

        await self.inner(scope, receive, send_with_session)


def SessionMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """``CookieMiddleware(SessionMiddleware(inner))``: cookies parsed, then a Django session in ``scope["session"]``."""
    return CookieMiddleware(SessionMiddleware(inner))
