"""Token authentication (tether-only): a signed, short-lived token instead of the session cookie.

For clients that cannot send the session cookie (a mobile app, a page on another domain): ``make_token(user)`` signs
a token that the client passes in the query string or in the ``Sec-WebSocket-Protocol`` header, and
``TokenAuthMiddleware`` puts its user in ``scope["user"]``. A token that is forged, expired, malformed, or outdated by
a password change yields ``AnonymousUser``, never an exception. Also importable from ``tether.auth``.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.contrib.auth import get_user_model, load_backend
from django.core import signing
from django.core.exceptions import ValidationError
from django.utils.crypto import constant_time_compare

from tether.auth import _USER_SCOPE_TYPES, _anonymous_user, _backend_path, _session_hashes
from tether.db import database_sync_to_async
from tether.middleware import BaseMiddleware
from tether.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TOKEN_SUBPROTOCOL_PREFIX", "TokenAuthMiddleware", "make_token"]

logger = logging.getLogger("tether.token_auth")

#: A ``Sec-WebSocket-Protocol`` entry ``token.<token>`` carries a token from ``make_token``.
TOKEN_SUBPROTOCOL_PREFIX = "token."
#: The signing salt: a token is only valid for tether's token authentication.
_TOKEN_SALT = "tether.auth.TokenAuthMiddleware"
#: Tokens are dot-separated so that they are valid subprotocol names and need no escaping in a URL.
_TOKEN_SEPARATOR = "."
#: Longer strings are not tokens; refused before any cryptography.
_MAX_TOKEN_LENGTH = 2048
#: Characters of the session auth hash a token carries: enough to notice a password change, without handing the
#: client the whole HMAC.
_TOKEN_HASH_CHARS = 32


def _token_signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=_TOKEN_SALT, sep=_TOKEN_SEPARATOR)


def _seconds(value: float | datetime.timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds (or a timedelta, or None), not {value!r}.")
    return float(value)


def _token_hash(user: Any) -> tuple[str, list[str]]:
    if not hasattr(user, "get_session_auth_hash"):
        return "", []
    current, fallbacks = _session_hashes(user)
    return current[:_TOKEN_HASH_CHARS], [fallback[:_TOKEN_HASH_CHARS] for fallback in fallbacks]


def make_token(user: Any, *, max_age: float | datetime.timedelta | None = None, backend: str | None = None) -> str:
    """A signed token that ``TokenAuthMiddleware`` accepts as ``user``; tether-only.

    The token is signed with ``SECRET_KEY`` (``django.core.signing.TimestampSigner`` with a tether-specific salt)
    and carries the user's primary key, the authentication backend and part of the session auth hash, so changing
    the password invalidates it. It holds only ``A-Z a-z 0-9 - _ .`` and so goes into a URL or a subprotocol name
    as it is. It is readable by whoever holds it (signed, not encrypted) and lives until the middleware's
    ``max_age``, or this ``max_age`` (seconds or timedelta) when that is shorter.

    The token names the backend whose ``get_user()`` loads the user again: ``backend``, else ``user.backend``, else
    the first of AUTHENTICATION_BACKENDS (so ``make_token(request.user)`` works in any view). Raises ``ValueError``
    for an anonymous or unsaved user and for a backend that is not configured.
    """
    if not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        raise ValueError(f"make_token() needs a saved, authenticated user, not {user!r}.")
    payload: dict[str, Any] = {
        "u": user._meta.pk.value_to_string(user),
        "b": _backend_path(user, backend, first_if_unknown=True),
        "h": _token_hash(user)[0],
    }
    lifetime = _seconds(max_age, "max_age")
    if lifetime is not None:
        payload["x"] = round(time.time() + lifetime, 3)
    return _token_signer().sign_object(payload)


def _token_payload(token: str, max_age: float | None) -> dict[str, Any] | None:
    """The verified payload of ``token``, or None (logged) when it is forged, expired or malformed."""
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        logger.info("Refused an auth token: %s.", "empty" if not token else "too long")
        return None
    try:
        payload = _token_signer().unsign_object(token, max_age=max_age)
    except signing.SignatureExpired:
        logger.info("Refused an auth token: it expired.")
        return None
    except (signing.BadSignature, ValueError, TypeError, UnicodeError):
        logger.info("Refused an auth token: bad signature or malformed.")
        return None
    if not isinstance(payload, dict) or not (
        isinstance(payload.get("u"), str)
        and isinstance(payload.get("b"), str)
        and isinstance(payload.get("h"), str)
        and isinstance(payload.get("x", 0), (int, float))
    ):
        logger.warning("Refused an auth token with a valid signature but an unexpected payload.")
        return None
    if "x" in payload and time.time() > payload["x"]:
        logger.info("Refused an auth token: it outlived the max_age it was made with.")
        return None
    return payload


def _user_from_token(token: str, max_age: float | None) -> Any:
    """``TokenAuthMiddleware``'s lookup, in the database thread: the token's user, or ``AnonymousUser``."""
    payload = _token_payload(token, max_age)
    if payload is None or payload["b"] not in settings.AUTHENTICATION_BACKENDS:
        return _anonymous_user()
    try:
        user_id = get_user_model()._meta.pk.to_python(payload["u"])
    except ValidationError:
        return _anonymous_user()
    user = load_backend(payload["b"]).get_user(user_id)
    if user is None:
        return _anonymous_user()
    current, fallbacks = _token_hash(user)
    if not any(constant_time_compare(payload["h"], candidate) for candidate in (current, *fallbacks)):
        logger.info("Refused an auth token: the user's password changed since it was made.")
        return _anonymous_user()
    return user


class TokenAuthMiddleware(BaseMiddleware):
    """Authenticate a connection by a token from ``make_token``; tether-only.

    The token is read from the ``Sec-WebSocket-Protocol`` header, as an offered subprotocol ``token.<token>``, or
    else from the query string parameter ``query_param`` (default ``token``). With a token, ``scope["user"]`` is its
    user, or ``AnonymousUser`` when the token is forged, malformed, older than ``max_age`` seconds (default 3600,
    at least 1, None for no limit; counted from the whole second the token was signed in), past the ``max_age`` it
    was made with, or outdated by a password change. Without one, a user already in
    the scope (from ``AuthMiddleware`` in front) is kept, else it is ``AnonymousUser``.

    The ``token.`` subprotocol entry is removed from ``scope["subprotocols"]``, so consumers choose among the real
    ones. Browsers fail a handshake in which the client offered subprotocols and the server chose none, so when the
    consumer accepts without choosing one, the middleware answers with the token entry the client offered.
    """

    def __init__(
        self, inner: ASGIApp, max_age: float | datetime.timedelta | None = 3600, query_param: str = "token"
    ) -> None:
        super().__init__(inner)
        self.max_age = _seconds(max_age, "max_age")
        if self.max_age is not None and self.max_age < 1:
            raise ValueError(
                f"max_age must be at least 1 second, not {max_age!r}: a token records when it was signed in whole "
                "seconds. For shorter lifetimes, pass max_age to make_token()."
            )
        if not isinstance(query_param, str) or not query_param:
            raise ValueError(f"query_param must be a non-empty str, not {query_param!r}.")
        self.query_param = query_param

    def _take_token(self, scope: Scope) -> tuple[str | None, str | None]:
        """Find the token; return it and the subprotocol entry it came in (removed from the scope), if any."""
        offered = list(scope.get("subprotocols") or ())
        entries = [entry for entry in offered if entry.startswith(TOKEN_SUBPROTOCOL_PREFIX)]
        if entries:
            scope["subprotocols"] = [entry for entry in offered if not entry.startswith(TOKEN_SUBPROTOCOL_PREFIX)]
            if len(entries) > 1:
                logger.info("Refused auth tokens: the client offered %d token subprotocols, not one.", len(entries))
                return "", entries[0]
            return entries[0][len(TOKEN_SUBPROTOCOL_PREFIX) :], entries[0]
        query = scope.get("query_string") or b""
        for name, value in parse_qsl(query.decode("latin-1")):
            if name == self.query_param:
                return value, None
        return None, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        if scope.get("type") not in _USER_SCOPE_TYPES:
            await self.inner(scope, receive, send)
            return
        token, entry = self._take_token(scope)
        if token is None:
            scope.setdefault("user", _anonymous_user())
        else:
            scope["user"] = await database_sync_to_async(_user_from_token)(token, self.max_age)
        if entry is not None:
            send = _answering_subprotocol(send, entry)
        await self.inner(scope, receive, send)


def _answering_subprotocol(send: Send, entry: str) -> Send:
    """Wrap ``send`` so an accept that chose no subprotocol answers with ``entry``, which the client offered."""

    async def send_choosing_subprotocol(message: Message) -> None:
        if message.get("type") == "websocket.accept" and message.get("subprotocol") is None:
            message = {**message, "subprotocol": entry}
        await send(message)

    return send_choosing_subprotocol
