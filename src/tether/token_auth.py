"""Token authentication (tether-only): a signed, short-lived token instead of the session cookie.

For clients that cannot send the session cookie (a mobile app, a page on another domain): ``make_token(user)`` signs
a token that the client passes in the ``Sec-WebSocket-Protocol`` header or in the query string, and
``TokenAuthMiddleware`` puts its user in ``scope["user"]``. A token that is forged, expired, malformed, outdated by a
password change, or made from a session that has ended (``make_token(user, session=request.session)``, then a
logout) yields ``AnonymousUser``, never an exception. Also importable from ``tether.auth``.

What a token carries, readable by whoever holds it: the user's primary key, the backend, an HMAC of the session auth
hash (which tells a password change and reveals nothing of the hash), and, when bound to a session, the session key
encrypted with a key derived from ``SECRET_KEY`` (so the token never hands out the session cookie's value).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import math
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model, load_backend
from django.core import signing
from django.core.exceptions import ValidationError
from django.utils.crypto import constant_time_compare, salted_hmac

from tether.auth import _USER_SCOPE_TYPES, _anonymous_user, _backend_path, _session_hashes
from tether.db import database_sync_to_async
from tether.middleware import BaseMiddleware
from tether.revocation import following
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
#: Characters of the password check a token carries (an HMAC of the session auth hash, not the hash itself).
_PASSWORD_CHECK_CHARS = 32
#: Salts of the password check and of the key stream that encrypts a bound session's key.
_PASSWORD_CHECK_SALT = "tether.token_auth.password"
_SESSION_SEAL_SALT = "tether.token_auth.session"
#: Random bytes that make each sealed session key's key stream unique.
_NONCE_BYTES = 16
#: Longer session keys are not sealed (Django's are 32 characters).
_MAX_SESSION_KEY_LENGTH = 256


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


def _secrets() -> list[str | bytes]:
    """``SECRET_KEY`` then each of ``SECRET_KEY_FALLBACKS``: what a token may have been made with."""
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def _password_checks(user: Any) -> list[str]:
    """The user's password check under ``SECRET_KEY`` first, then under each fallback secret.

    A check is an HMAC of the session auth hash made with the same secret as that hash, so it changes with the
    password (and with a rotated key, as the hash does) while revealing nothing of the hash a session stores.
    """
    if not hasattr(user, "get_session_auth_hash"):
        return [""]
    current, fallbacks = _session_hashes(user)
    return [
        salted_hmac(_PASSWORD_CHECK_SALT, auth_hash, secret=secret, algorithm="sha256").hexdigest()[
            :_PASSWORD_CHECK_CHARS
        ]
        # A user model without fallback hashes gives the current one only: the fallback secrets are then left out.
        for auth_hash, secret in zip([current, *fallbacks], _secrets(), strict=False)
    ]


def _key_stream(nonce: bytes, length: int, secret: str | bytes) -> bytes:
    """``length`` bytes of HMAC-SHA256 output keyed by ``secret``, in counter mode from ``nonce``."""
    blocks = []
    for counter in range(-(-length // 32)):
        block = nonce + counter.to_bytes(4, "big")
        blocks.append(salted_hmac(_SESSION_SEAL_SALT, block, secret=secret, algorithm="sha256").digest())
    return b"".join(blocks)[:length]


def _seal_session_key(session_key: str) -> str:
    """``session_key`` encrypted for the token: a fresh nonce, then the key XORed with the nonce's key stream.

    The signature over the whole payload makes it tamper-proof; the key stream (a pseudo-random function of
    ``SECRET_KEY`` and a random nonce) makes it unreadable, so the token never exposes the session cookie's value.
    """
    data = session_key.encode("ascii")
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = bytes(a ^ b for a, b in zip(data, _key_stream(nonce, len(data), settings.SECRET_KEY), strict=True))
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def _unsealed_session_keys(value: str) -> list[str]:
    """The session keys ``value`` may hold, one per secret whose key stream gives printable ASCII."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return []
    nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    if len(nonce) != _NONCE_BYTES or not sealed:
        return []
    keys = []
    for secret in _secrets():
        plain = bytes(a ^ b for a, b in zip(sealed, _key_stream(nonce, len(sealed), secret), strict=True))
        if plain.isascii() and plain.decode("ascii").isprintable():
            keys.append(plain.decode("ascii"))
    return keys


def _session_key_of(session: Any) -> str:
    """The key of the session a token is bound to (a session store or a key), checked; ``ValueError`` otherwise."""
    key = session if isinstance(session, str) else getattr(session, "session_key", None)
    if not isinstance(key, str) or not key:
        raise ValueError(
            "make_token(session=...) needs a saved session (request.session of a logged-in request) or its key; "
            f"{session!r} has no key yet: save it first."
        )
    if len(key) > _MAX_SESSION_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ValueError(
            f"make_token(session=...) needs a session key of at most {_MAX_SESSION_KEY_LENGTH} printable ASCII "
            "characters, as Django's session engines make them."
        )
    return key


def _session_logs_in(session_key: str, user_id: str) -> bool:
    """Whether the stored session ``session_key`` still exists and logs in the user ``user_id`` (database thread)."""
    from tether.sessions import _session_store_class

    store = _session_store_class()(session_key)
    return bool(store.get(SESSION_KEY) == user_id)


def make_token(
    user: Any,
    *,
    session: Any = None,
    max_age: float | datetime.timedelta | None = None,
    backend: str | None = None,
) -> str:
    """A signed token that ``TokenAuthMiddleware`` accepts as ``user``; tether-only.

    The token is signed with ``SECRET_KEY`` (``django.core.signing.TimestampSigner`` with a tether-specific salt)
    and carries the user's primary key, the authentication backend and an HMAC of the session auth hash, so changing
    the password invalidates it. With ``session`` (``request.session``, or a session key), the token is bound to that
    session: it stops working when the session ends (logout, flush, expiry), and its WebSockets are closed then, as
    the session's own are. It holds only ``A-Z a-z 0-9 - _ .`` and so goes into a URL or a subprotocol name as it
    is. Its payload is readable by whoever holds it (signed, not encrypted; the session key in it is encrypted) and
    it lives until the middleware's ``max_age``, or this ``max_age`` (seconds or timedelta) when that is shorter.

    The token names the backend whose ``get_user()`` loads the user again: ``backend``, else ``user.backend``, else
    the first of AUTHENTICATION_BACKENDS (so ``make_token(request.user)`` works in any view). Raises ``ValueError``
    for an anonymous or unsaved user, for a backend that is not configured, and for a ``session`` without a key or
    logged in as somebody else.
    """
    if not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        raise ValueError(f"make_token() needs a saved, authenticated user, not {user!r}.")
    user_id = user._meta.pk.value_to_string(user)
    payload: dict[str, Any] = {
        "u": user_id,
        "b": _backend_path(user, backend, first_if_unknown=True),
        "h": _password_checks(user)[0],
    }
    if session is not None:
        if not isinstance(session, str) and session.get(SESSION_KEY) not in (None, user_id):
            raise ValueError("make_token(session=...) got a session logged in as another user; pass that user's.")
        payload["s"] = _seal_session_key(_session_key_of(session))
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
        and isinstance(payload.get("s", ""), str)
    ):
        logger.warning("Refused an auth token with a valid signature but an unexpected payload.")
        return None
    if "x" in payload and time.time() > payload["x"]:
        logger.info("Refused an auth token: it outlived the max_age it was made with.")
        return None
    return payload


def _user_from_token(token: str, max_age: float | None) -> tuple[Any, str | None]:
    """``TokenAuthMiddleware``'s lookup, in the database thread: the token's user, or ``AnonymousUser``, and the key
    of the session the token is bound to (None when it is bound to none)."""
    anonymous = _anonymous_user(), None
    payload = _token_payload(token, max_age)
    if payload is None or payload["b"] not in settings.AUTHENTICATION_BACKENDS:
        return anonymous
    try:
        user_id = get_user_model()._meta.pk.to_python(payload["u"])
    except ValidationError:
        return anonymous
    user = load_backend(payload["b"]).get_user(user_id)
    if user is None:
        return anonymous
    if not any(constant_time_compare(payload["h"], candidate) for candidate in _password_checks(user)):
        logger.info("Refused an auth token: the user's password changed since it was made.")
        return anonymous
    session_key = None
    if "s" in payload:
        keys = [key for key in _unsealed_session_keys(payload["s"]) if _session_logs_in(key, payload["u"])]
        if not keys:
            logger.info("Refused an auth token: the session it was made from has ended (logout, flush or expiry).")
            return anonymous
        session_key = keys[0]
    return user, session_key


class TokenAuthMiddleware(BaseMiddleware):
    """Authenticate a connection by a token from ``make_token``; tether-only.

    The token is read from the ``Sec-WebSocket-Protocol`` header, as an offered subprotocol ``token.<token>``, or
    else from the query string parameter ``query_param`` (default ``token``). With a token, ``scope["user"]`` is its
    user, or ``AnonymousUser`` when the token is forged, malformed, older than ``max_age`` seconds (default 3600,
    at least 1, None for no limit; counted from the whole second the token was signed in), past the ``max_age`` it
    was made with, outdated by a password change, or bound to a session that has ended. Without one, a user
    already in the scope (from ``AuthMiddleware`` in front) is kept, else it is ``AnonymousUser``.

    A WebSocket authenticated by a token follows its login (see ``tether.revocation``): it is closed with
    ``AUTH_REVOKED`` when the user's password changes or they are made inactive, and, for a token bound to a
    session, when that session ends.

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
            await self.inner(scope, receive, send)
            return
        # Followed like a session's WebSocket; one AuthMiddleware in front already follows it, and is rebound here.
        receive, send, started = await following.start_following(scope, receive, send)
        try:
            user, session_key = await database_sync_to_async(_user_from_token)(token, self.max_age)
            scope["user"] = user
            following.follow(scope, user, session_key)
            if entry is not None:
                send = _answering_subprotocol(send, entry)
            await self.inner(scope, receive, send)
        finally:
            if started:
                await following.finish_following(scope)


def _answering_subprotocol(send: Send, entry: str) -> Send:
    """Wrap ``send`` so an accept that chose no subprotocol answers with ``entry``, which the client offered."""

    async def send_choosing_subprotocol(message: Message) -> None:
        if message.get("type") == "websocket.accept" and message.get("subprotocol") is None:
            message = {**message, "subprotocol": entry}
        await send(message)

    return send_choosing_subprotocol
