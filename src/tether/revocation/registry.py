"""The followed connections of this process (``Registry``) and what ending one's login does (``Watch.revoke``).

A connection is registered under a keyed hash of its session key (``session_tag``) and under its user's primary key
(``user_key``), from any thread; a revocation finds the matching connections and revokes each on its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from typing import Any

from django.utils.crypto import salted_hmac

from tether.types import Message, Receive, Scope, Send

__all__ = [
    "AUTH_REVOKED",
    "REVOKED_MESSAGE_TYPE",
    "Registry",
    "Watch",
    "registry",
    "revoke_here",
    "session_tag",
    "user_key",
]

logger = logging.getLogger("tether.revocation")

#: The close code of a WebSocket whose login ended: 4401, "unauthorized", in the 4000-4999 application range. A client
#: that sees it should not reconnect with the same credentials: it must log in again (or fetch a new token).
AUTH_REVOKED = 4401
#: The type of the message a consumer that called ``carry_on_anonymous`` receives (handler ``auth_revoked``).
REVOKED_MESSAGE_TYPE = "auth.revoked"
#: Salt of the keyed hash that stands for a session key in the registry and on the layer.
_SESSION_TAG_SALT = "tether.revocation.session"
#: The longest close reason a close frame carries (RFC 6455: 125 bytes of payload, 2 of them the code).
_MAX_REASON_BYTES = 123
#: What the application may send no more once the connection was closed for its ended login.
_DROPPED_AFTER_CLOSE = frozenset({"websocket.send", "websocket.close", "websocket.accept"})


def session_tag(session_key: str) -> str:
    """The keyed hash that stands for ``session_key`` in the registry and on the layer (never the key itself)."""
    return salted_hmac(_SESSION_TAG_SALT, session_key, algorithm="sha256").hexdigest()[:32]


def user_key(user: Any) -> str:
    """The user's primary key as the session stores it: how the registry names a user."""
    return str(user._meta.pk.value_to_string(user))


class Watch:
    """One followed connection: where it is registered, how to close it, and what to tell an opted-in consumer."""

    __slots__ = (
        "check",
        "closer",
        "closing",
        "consumer_scope",
        "expiry",
        "loop",
        "missed",
        "notices",
        "notify",
        "receive",
        "send",
        "session",
        "session_key",
        "user",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, send: Send) -> None:
        self.loop = loop
        self.receive = receive
        self.send = send
        self.session: str | None = None  # session tag
        self.session_key: str | None = None  # the key the tag was made from, so it is hashed once
        self.user: str | None = None  # user key
        # Revocations heard while the connection was pending (its user not known yet): "user:<key>" or "session:<tag>"
        # -> reason. A token names its session only once checked, so sessions count too.
        self.missed: dict[str, str] | None = None
        self.closing = False
        self.consumer_scope: Scope | None = None  # set by carry_on_anonymous
        self.notify: tuple[Any, str] | None = None  # the opted-in consumer's layer and channel
        self.notices: deque[Message] | None = None  # its notices when it has no layer (given with the next receive)
        self.expiry: asyncio.TimerHandle | None = None  # fires at the session's expiry date
        self.check: asyncio.Task[None] | None = None  # the expiry check in flight; cancelled when the socket ends
        self.closer: asyncio.Task[None] | None = None  # the close in flight; awaited when the socket ends

    def revoke(self, reason: str) -> None:
        """End this connection's login (on its loop): close it, or downgrade an opted-in consumer to anonymous."""
        if self.closing or not registry.forget(self):
            return
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.consumer_scope is not None:
            from django.contrib.auth.models import AnonymousUser

            user = self.consumer_scope.get("user")
            from tether.auth import UserLazyObject

            if isinstance(user, UserLazyObject):
                user._wrapped = AnonymousUser()
            self.consumer_scope["user"] = AnonymousUser()
            notice = {"type": REVOKED_MESSAGE_TYPE, "reason": reason}
            if self.notify is not None:
                self.closer = self.loop.create_task(self.tell(notice))
            else:
                self.notices = self.notices or deque()
                self.notices.append(notice)
            logger.info("A connection's login ended (%s); it carries on as an anonymous user.", reason)
            return
        self.closing = True
        logger.info("Closing a connection with %d: its login ended (%s).", AUTH_REVOKED, reason)
        self.closer = self.loop.create_task(self.close(reason))

    async def send_unless_closed(self, message: Message) -> None:
        """The application's ``send``: after a close for an ended login, what it sends has nowhere to go."""
        if self.closing and message.get("type") in _DROPPED_AFTER_CLOSE:
            return
        await self.send(message)

    async def receive_with_notices(self) -> Message:
        """The application's ``receive``; a consumer without a channel layer gets its notice on the next call."""
        if self.notices:
            return self.notices.popleft()
        return await self.receive()

    async def tell(self, notice: Message) -> None:
        """Send the opted-in consumer its notice on its own channel, which it is waiting on already."""
        if self.notify is None:
            return
        layer, channel = self.notify
        try:
            await layer.send(channel, notice)
        except Exception:
            logger.warning("Could not send auth.revoked to a consumer's channel; it comes with the next frame.")
            self.notices = self.notices or deque()
            self.notices.append(notice)

    async def close(self, reason: str) -> None:
        """Send the server the close; the application then receives ``websocket.disconnect`` as for any close."""
        # RFC 6455 leaves 123 bytes for the reason; a reason given to revoke_user() may be longer.
        text = f"login ended: {reason}".encode()[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
        try:
            await self.send({"type": "websocket.close", "code": AUTH_REVOKED, "reason": text})
        except Exception:
            logger.debug("The connection was gone before it could be closed.", exc_info=True)


class Registry:
    """The followed connections of this process, by session tag and by user key; safe to use from any thread.

    The indexes hold lists, not sets: a session or a user has a few sockets (a tab or device each), and a one-item
    list costs 64 bytes where a set costs 216 (measured by benchmarks/revocation_cost.py).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_session: dict[str, list[Watch]] = {}
        self.by_user: dict[str, list[Watch]] = {}
        self.pending: set[Watch] = set()  # registered before their user is known: during the handshake only

    def add(self, watch: Watch) -> None:
        """Register ``watch`` under its session tag and user key (pending while the user is unknown)."""
        with self.lock:
            self.add_locked(watch)

    def add_locked(self, watch: Watch) -> None:
        """``add`` with the lock held."""
        if watch.session is not None:
            self.by_session.setdefault(watch.session, []).append(watch)
        if watch.user is not None:
            self.by_user.setdefault(watch.user, []).append(watch)
        else:
            self.pending.add(watch)

    def forget(self, watch: Watch) -> bool:
        """Take ``watch`` out of the registry; whether it was in."""
        with self.lock:
            return self.forget_locked(watch)

    def forget_locked(self, watch: Watch) -> bool:
        """``forget`` with the lock held."""
        found = watch in self.pending
        self.pending.discard(watch)
        for index, key in ((self.by_session, watch.session), (self.by_user, watch.user)):
            members = index.get(key) if key is not None else None
            if members is not None and watch in members:
                found = True
                members.remove(watch)
                if not members:
                    del index[key]  # type: ignore[arg-type]
        return found

    def has(self, watch: Watch) -> bool:
        """Whether ``watch`` is registered (it is not once revoked or no longer followed)."""
        with self.lock:
            if watch in self.pending:
                return True
            if watch.session is not None and watch in self.by_session.get(watch.session, ()):
                return True
            return watch.user is not None and watch in self.by_user.get(watch.user, ())

    def rebind(self, watch: Watch, session_key: str | None, user: str) -> str | None:
        """Register ``watch`` anew under ``session_key`` and ``user``, atomically (a revocation on another thread
        sees it either before or after); the reason of a revocation of that user or session it missed while
        pending, if any."""
        session = watch.session if session_key == watch.session_key else session_tag(session_key or "")
        with self.lock:
            self.forget_locked(watch)
            watch.session_key = session_key
            watch.session = session if session_key else None
            watch.user = user
            missed, watch.missed = watch.missed, None
            self.add_locked(watch)
        if not missed:
            return None
        return missed.get(f"user:{user}") or (missed.get(f"session:{watch.session}") if watch.session else None)

    def matching(self, session: str | None, user: str | None, reason: str) -> list[Watch]:
        """The watches of ``session`` or ``user``; a connection whose user is not known yet notes the revocation."""
        with self.lock:
            found = set(self.by_session.get(session, ())) if session is not None else set()
            if user is not None:
                found.update(self.by_user.get(user, ()))
            for watch in self.pending - found:
                if watch.missed is None:
                    watch.missed = {}
                watch.missed[f"user:{user}" if user is not None else f"session:{session}"] = reason
            return list(found)

    def count(self) -> int:
        """How many connections are registered (each once, whichever indexes hold it)."""
        with self.lock:
            watches: set[Watch] = set(self.pending)
            for members in (*self.by_session.values(), *self.by_user.values()):
                watches.update(members)
            return len(watches)


registry = Registry()


def followed_connections() -> int:
    """How many connections of this process are followed right now (for metrics and tests)."""
    return registry.count()


def revoke_here(session: str | None, user: str | None, reason: str) -> int:
    """Revoke this process's matching connections, each on its own loop; how many matched."""
    watches = registry.matching(session, user, reason)
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for watch in watches:
        if watch.loop is running:
            watch.revoke(reason)
        else:
            with contextlib.suppress(RuntimeError):  # that loop has closed: its connections are gone
                watch.loop.call_soon_threadsafe(watch.revoke, reason)
    return len(watches)
