"""Django authentication for consumers: the logged-in user in ``scope["user"]``, login and logout over any connection.

``AuthMiddleware`` reads the user from the Django session that ``SessionMiddleware`` put in the scope, with the same
checks as ``django.contrib.auth.get_user`` (the backend must still be configured, the session auth hash must match
the user's password, with ``SECRET_KEY_FALLBACKS`` honoured), so a password change or a logout elsewhere ends the
session here too. ``login`` and ``logout`` change the session and send Django's ``user_logged_in`` and
``user_logged_out`` signals. As in Channels, ``get_user``, ``login`` and ``logout`` are awaitables that run their
ORM work in the database thread (``await login(self.scope, user)``; ``async_to_sync(login)(self.scope, user)`` from a
sync consumer).

A logged-in WebSocket follows its login (tether-only, ``tether.revocation``): a logout, a password change, a
deactivation or an ended session closes it with ``AUTH_REVOKED`` (4401) in every process; ``revoke_session``,
``revoke_user`` and ``carry_on_anonymous`` are importable from here.

Token authentication (``TokenAuthMiddleware``, ``make_token``, tether-only) lives in ``tether.token_auth`` and is
importable from here too, as it always was.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
    user_logged_in,
    user_logged_out,
)
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.utils.crypto import constant_time_compare
from django.utils.functional import LazyObject, empty

from tether.db import database_sync_to_async
from tether.middleware import BaseMiddleware
from tether.revocation import (
    AUTH_REVOKED,
    arevoke_session,
    arevoke_user,
    carry_on_anonymous,
    following,
    revoke_session,
    revoke_user,
    signals,
)
from tether.sessions import CookieMiddleware, SessionMiddleware
from tether.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "AUTH_REVOKED",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "TokenAuthMiddleware",
    "UserLazyObject",
    "alogin",
    "alogout",
    "arevoke_session",
    "arevoke_user",
    "carry_on_anonymous",
    "get_user",
    "login",
    "logout",
    "make_token",
    "revoke_session",
    "revoke_user",
]

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

    from tether.token_auth import TOKEN_SUBPROTOCOL_PREFIX, TokenAuthMiddleware, make_token

logger = logging.getLogger("tether.auth")


def _anonymous_user() -> AnonymousUser:
    """A new ``AnonymousUser``.

    Imported on first use: ``django.contrib.auth.models`` needs the app registry, and a Channels project imports the
    auth middleware at the top of ``asgi.py``, before ``get_asgi_application()`` has set Django up.
    """
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()


#: Scope types that carry a user. Other scopes (lifespan, worker channels) pass through the middlewares untouched.
_USER_SCOPE_TYPES = frozenset({"http", "websocket"})

_NO_SESSION = (
    "There is no session in the scope: wrap the application in AuthMiddlewareStack(...), which puts "
    "CookieMiddleware and SessionMiddleware in front of AuthMiddleware."
)


def _session_of(scope: Scope) -> Any:
    try:
        return scope["session"]
    except KeyError:
        raise ValueError(_NO_SESSION) from None


def _session_user_pk(session: Any) -> Any:
    """The primary key stored in the session, converted to the user model's type (KeyError when there is none)."""
    return get_user_model()._meta.pk.to_python(session[SESSION_KEY])


def _session_hashes(user: Any) -> tuple[str, list[str]]:
    """The user's session auth hash and the hashes made with each of ``SECRET_KEY_FALLBACKS``."""
    current = user.get_session_auth_hash()
    fallback_hashes = getattr(user, "get_session_auth_fallback_hash", None)
    return current, list(fallback_hashes()) if fallback_hashes is not None else []


def _backend_path(user: Any, backend: str | None, *, first_if_unknown: bool = False) -> str:
    """The dotted path of the backend to record for ``user``, chosen as ``django.contrib.auth.login`` chooses.

    ``backend``, else ``user.backend`` (set by ``authenticate()``), else the only configured backend; with several
    configured, that is a ``ValueError``, unless ``first_if_unknown`` picks the first of them.
    """
    backend = backend or getattr(user, "backend", None)
    if backend is None:
        configured = settings.AUTHENTICATION_BACKENDS
        if not configured:
            raise ImproperlyConfigured("AUTHENTICATION_BACKENDS is empty; list at least one authentication backend.")
        if len(configured) > 1 and not first_if_unknown:
            raise ValueError(
                "Several AUTHENTICATION_BACKENDS are configured, so say which one authenticated the user: pass "
                "backend='dotted.path' or use a user returned by authenticate(), which sets user.backend."
            )
        backend = configured[0]
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a dotted import path string, not {backend!r}.")
    if backend not in settings.AUTHENTICATION_BACKENDS:
        raise ValueError(
            f"Backend {backend!r} is not in AUTHENTICATION_BACKENDS, so a session or token naming it would never "
            "be accepted; add it to the setting or pass one that is."
        )
    return backend


def _user_from_session(scope: Scope) -> AbstractBaseUser | AnonymousUser:
    """``get_user``'s work, in the database thread."""
    session = _session_of(scope)
    try:
        user_id = _session_user_pk(session)
        backend_path = session[BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return _anonymous_user()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return _anonymous_user()
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return _anonymous_user()
    if not hasattr(user, "get_session_auth_hash"):
        return user
    session_hash = session.get(HASH_SESSION_KEY)
    current, fallbacks = _session_hashes(user)
    if session_hash and constant_time_compare(session_hash, current):
        return user
    if session_hash and any(constant_time_compare(session_hash, fallback) for fallback in fallbacks):
        # Signed with a retired SECRET_KEY: upgrade the hash. Django also cycles the session key, which only helps
        # when a response can carry the new cookie; a WebSocket keeps its key so the browser's cookie stays valid.
        if scope.get("type") == "http":
            session.cycle_key()
        session[HASH_SESSION_KEY] = current
        return user
    # The password changed (or the hash is missing): this session no longer authenticates anybody. This connection
    # stops being followed first, so the flush (a deleted session) does not close the connection that is asking.
    following.stop_following(scope)
    session.flush()
    return _anonymous_user()


@database_sync_to_async
def get_user(scope: Scope) -> AbstractBaseUser | AnonymousUser:
    """Return the user that the scope's session is logged in as, or ``AnonymousUser``; an awaitable.

    Checks what ``django.contrib.auth.get_user`` checks: the recorded backend must be in AUTHENTICATION_BACKENDS and
    the session auth hash must match the user's password (or a ``SECRET_KEY_FALLBACKS`` secret, in which case the
    hash is upgraded). A session whose hash does not match is flushed. Raises ``ValueError`` when the scope has no
    session.
    """
    return _user_from_session(scope)


async def login(scope: Scope, user: Any, backend: str | None = None) -> None:
    """Log ``user`` in on the scope's session and set ``scope["user"]``; an awaitable.

    As ``django.contrib.auth.login``: the session key is cycled (a session of another user is flushed first) to
    defeat session fixation, then the user's id, backend and session auth hash are stored and ``user_logged_in``
    is sent (with ``request=None``). With no ``user``, ``scope["user"]`` is logged in. ``backend`` defaults to
    ``user.backend`` (set by ``authenticate()``) or the only configured backend.

    The session is not saved: on a WebSocket call ``save()`` / ``asave()`` after logging in. Raises ``ValueError``
    without a session in the scope, for an anonymous user, or when the backend cannot be determined.

    A followed connection (see ``tether.revocation``) follows the new login from then on; the key cycle does not
    close it.
    """
    following.stop_following(scope)
    try:
        await database_sync_to_async(_log_in)(scope, user, backend)
    finally:
        following.follow(scope, scope.get("user"), following.scope_session_key(scope))


def _log_in(scope: Scope, user: Any, backend: str | None) -> None:
    """``login``'s work, in the database thread."""
    session = _session_of(scope)
    if user is None:
        user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        raise ValueError(
            f"login() needs an authenticated user (a user model instance), not {user!r}; pass the user to log in."
        )
    session_auth_hash = user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    if SESSION_KEY in session:
        try:
            same_user = _session_user_pk(session) == user.pk
        except ValidationError:
            same_user = False
        if not same_user or (
            session_auth_hash and not constant_time_compare(session.get(HASH_SESSION_KEY, ""), session_auth_hash)
        ):
            # Never carry another user's session data over to this one.
            session.flush()
    else:
        session.cycle_key()
    backend = _backend_path(user, backend)
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = backend
    session[HASH_SESSION_KEY] = session_auth_hash
    scope["user"] = user
    user_logged_in.send(sender=user.__class__, request=None, user=user)


async def logout(scope: Scope) -> None:
    """Log the scope's session out: send ``user_logged_out``, flush the session, set ``scope["user"]`` anonymous.

    An awaitable. Flushing deletes the session from the store at once, so a logout over a WebSocket also ends the
    browser's HTTP session; no ``save()`` is needed. Raises ``ValueError`` without a session in the scope.

    The session's other followed WebSockets, in every process, are closed with ``AUTH_REVOKED``; the one calling
    ``logout`` stays open, as an anonymous connection.
    """
    following.stop_following(scope)
    await database_sync_to_async(_log_out)(scope)


def _log_out(scope: Scope) -> None:
    """``logout``'s work, in the database thread."""
    session = _session_of(scope)
    user = scope.get("user")
    if not getattr(user, "is_authenticated", False):
        user = None
    user_logged_out.send(sender=user.__class__, request=None, user=user)
    key = following.scope_session_key(scope)
    if key is not None:
        signals.logged_out(key)  # the session's other sockets, in every process
    session.flush()
    scope["user"] = _anonymous_user()


#: The same awaitables under Django's async names (``django.contrib.auth.alogin`` / ``alogout``), for readers who
#: expect the ``a`` prefix on anything awaited.
alogin = login
alogout = logout


if TYPE_CHECKING:
    _LazyUser = LazyObject[AbstractBaseUser | AnonymousUser]
else:  # Django's LazyObject is generic only in django-stubs, not at run time.
    _LazyUser = LazyObject


class UserLazyObject(_LazyUser):
    """``scope["user"]`` as ``AuthMiddleware`` puts it there; resolved to the user before the application runs."""

    def _setup(self) -> None:
        raise ValueError(
            "scope['user'] was read before AuthMiddleware resolved it; read it from inside the application that "
            "AuthMiddleware wraps."
        )


class AuthMiddleware(BaseMiddleware):
    """Put the session's user in ``scope["user"]`` (``AnonymousUser`` when nobody is logged in).

    Needs ``SessionMiddleware`` in front of it: use ``AuthMiddlewareStack``. The user is looked up (``get_user``) in
    the database thread before the wrapped application runs. A ``scope["user"]`` that is already resolved, set by
    another middleware in front, is left alone. Raises ``ValueError`` when the scope has no session.

    A logged-in WebSocket follows its login (unless ``TETHER_FOLLOW_LOGIN = False``): when the session ends (logout,
    flush, expiry) or the user's password changes or they are made inactive, it is closed with ``AUTH_REVOKED``
    (4401), in whichever process it is; see ``tether.revocation``.
    """

    def populate_scope(self, scope: Scope) -> None:
        """Check the session is there and put an unresolved ``UserLazyObject`` in ``scope["user"]``."""
        if "session" not in scope:
            raise ValueError(f"AuthMiddleware cannot find the session. {_NO_SESSION}")
        if "user" not in scope:
            scope["user"] = UserLazyObject()

    async def resolve_scope(self, scope: Scope) -> None:
        """Look the user up and fill in the ``UserLazyObject`` placed by ``populate_scope``."""
        user = scope["user"]
        if isinstance(user, UserLazyObject) and user._wrapped is empty:
            user._wrapped = await get_user(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        if scope.get("type") not in _USER_SCOPE_TYPES:
            await self.inner(scope, receive, send)
            return
        self.populate_scope(scope)
        # A WebSocket is followed (tether.revocation): registered before its user is read, so that a logout during
        # the lookup still reaches it, and closed when its login ends.
        receive, send, started = await following.start_following(scope, receive, send)
        try:
            await self.resolve_scope(scope)
            if started:
                following.follow(scope, scope["user"], following.scope_session_key(scope))
            await self.inner(scope, receive, send)
        finally:
            if started:
                await following.finish_following(scope)


def AuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """``CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))``: cookies, session, then ``scope["user"]``."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))


#: Names of ``tether.token_auth`` that this module has always offered; loaded on first use, so that neither module
#: has to import the other at the top (token authentication builds on the session helpers above).
_TOKEN_AUTH_NAMES = frozenset({"TOKEN_SUBPROTOCOL_PREFIX", "TokenAuthMiddleware", "make_token"})


def __getattr__(name: str) -> Any:
    if name in _TOKEN_AUTH_NAMES:
        from tether import token_auth

        return getattr(token_auth, name)
    raise AttributeError(f"module 'tether.auth' has no attribute {name!r}")
