"""Sockets follow the login (tether-only): a logout, password change, deactivation or ended session closes them.

A WebSocket authenticated by a session (``AuthMiddleware``) or by a token (``TokenAuthMiddleware``) is *followed*:
the connection is entered in a per-process registry under a keyed hash of its session key and under its user's
primary key for as long as it is open. When the login ends, every followed connection of that session (logout,
flushed or deleted session, expiry) or of that user (password change, deactivation, deletion) is closed with
``AUTH_REVOKED`` (4401), or, for a consumer that called ``carry_on_anonymous(self)``, carries on with
``scope["user"]`` set to ``AnonymousUser`` and receives an ``auth.revoked`` message.

Other processes hear of a revocation through the channel layer: each event loop that holds followed connections
runs one listener task with one channel in the group ``REVOCATION_GROUP``, and ``revoke_session``/``revoke_user``
(called by the signal receivers in ``tether.apps``) ``group_send`` one message to it. A revocation always closes the
matching connections of the calling process directly, so one process without a shared layer still works. Raw session
keys never travel: only ``salted_hmac`` digests of them do.

Cost per followed connection: one small object (``__slots__``), two dict entries, one ``loop.call_at`` handle for the
expiry, no task and no channel. Per process: one listener task and one channel per event loop, one group membership.

The setting ``TETHER_FOLLOW_LOGIN`` (default True) turns it off; ``TETHER_FOLLOW_LOGIN_LAYER`` (default
``"default"``) names the channel layer that carries revocations.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import secrets
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.signals import setting_changed
from django.utils import timezone
from django.utils.crypto import salted_hmac

from tether import DEFAULT_CHANNEL_LAYER
from tether.db import database_sync_to_async
from tether.types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

    from tether.layers.base import BaseChannelLayer

__all__ = [
    "AUTH_REVOKED",
    "REVOCATION_GROUP",
    "REVOKED_MESSAGE_TYPE",
    "arevoke_session",
    "arevoke_user",
    "carry_on_anonymous",
    "followed_connections",
    "revoke_session",
    "revoke_user",
]

logger = logging.getLogger("tether.revocation")

#: The close code of a WebSocket whose login ended: 4401, "unauthorized", in the 4000-4999 application range. A client
#: that sees it should not reconnect with the same credentials: it must log in again (or fetch a new token).
AUTH_REVOKED = 4401
#: The type of the message a consumer that called ``carry_on_anonymous`` receives (handler ``auth_revoked``).
REVOKED_MESSAGE_TYPE = "auth.revoked"
#: The group every listening process joins with one channel per event loop.
REVOCATION_GROUP = "tether.auth.revocations"
#: The scope key under which the followed connection's ``_Watch`` travels (shared by every copy of the scope).
_SCOPE_KEY = "auth_watch"
#: Salt of the keyed hash that stands for a session key in the registry and on the layer.
_SESSION_TAG_SALT = "tether.revocation.session"
#: How long a new connection waits, at most, for its loop's listener to join the group before it carries on.
_LISTENER_READY_TIMEOUT = 5.0
#: The listener renews its group membership this often (the Redis layer forgets members after ``group_expiry``).
_MAX_RENEW_SECONDS = 3600.0
#: Backoff bounds of a listener whose layer fails (Redis gone): it retries, and revokes locally meanwhile.
_MIN_BACKOFF, _MAX_BACKOFF = 0.5, 30.0
#: What the application may send no more once the connection was closed for its ended login.
_DROPPED_AFTER_CLOSE = frozenset({"websocket.send", "websocket.close", "websocket.accept"})
#: How long a connection that ended waits for its close (or notice) in flight to be sent, at most (seconds).
_CLOSER_GRACE = 1.0
#: How long a new connection's session waits to have its expiry date read with the others' (seconds).
_EXPIRY_READ_DELAY = 0.25
#: A session whose expiry check finds it still alive is checked again no sooner than this (seconds).
_MIN_RECHECK = 1.0


#: The two settings, read once (a missing setting costs 3 us to look up, on every connection) and forgotten when a
#: test changes them.
_settings_read: dict[str, Any] = {}


def _setting(name: str, default: Any) -> Any:
    try:
        return _settings_read[name]
    except KeyError:
        value = _settings_read[name] = getattr(settings, name, default)
        return value


def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in {"TETHER_FOLLOW_LOGIN", "TETHER_FOLLOW_LOGIN_LAYER", "CHANNEL_LAYERS"}:
        _settings_read.clear()
        for loop in [loop for loop, listener in _listeners.items() if listener is None]:
            del _listeners[loop]


setting_changed.connect(_settings_changed, dispatch_uid="tether.revocation.settings_changed")


def _enabled() -> bool:
    return bool(_setting("TETHER_FOLLOW_LOGIN", True))


def _layer_alias() -> str:
    alias = _setting("TETHER_FOLLOW_LOGIN_LAYER", DEFAULT_CHANNEL_LAYER)
    if not isinstance(alias, str):
        raise TypeError(f"TETHER_FOLLOW_LOGIN_LAYER must name a layer of CHANNEL_LAYERS (a str), not {alias!r}.")
    return alias


def _shared_layer() -> BaseChannelLayer | None:
    """The layer that reaches other processes, or None (no layer configured, or the in-memory layer)."""
    from tether.layers import get_channel_layer
    from tether.layers.inmemory import InMemoryChannelLayer

    layer = get_channel_layer(_layer_alias())
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    return layer


def session_tag(session_key: str) -> str:
    """The keyed hash that stands for ``session_key`` in the registry and on the layer (never the key itself)."""
    return salted_hmac(_SESSION_TAG_SALT, session_key, algorithm="sha256").hexdigest()[:32]


def user_key(user: Any) -> str:
    """The user's primary key as the session stores it: how the registry names a user."""
    return str(user._meta.pk.value_to_string(user))


_origin: tuple[int, str] = (0, "")


def _process_id() -> str:
    """An id for this process, new after a fork, so a process skips only the broadcasts it sent itself."""
    global _origin
    pid = os.getpid()
    if _origin[0] != pid:
        _origin = (pid, f"{pid}-{secrets.token_hex(6)}")
    return _origin[1]


class _Watch:
    """One followed connection: where it is registered, how to close it, and what to tell an opted-in consumer."""

    __slots__ = (
        "check",
        "closer",
        "closing",
        "consumer_scope",
        "expiry",
        "loop",
        "missed_users",
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
        self.missed_users: dict[str, str] | None = None  # user revocations (user -> reason) heard before binding
        self.closing = False
        self.consumer_scope: Scope | None = None  # set by carry_on_anonymous
        self.notify: tuple[Any, str] | None = None  # the opted-in consumer's layer and channel
        self.notices: deque[Message] | None = None  # its notices when it has no layer (given with the next receive)
        self.expiry: asyncio.TimerHandle | None = None  # fires at the session's expiry date
        self.check: asyncio.Task[None] | None = None  # the expiry check in flight; cancelled when the socket ends
        self.closer: asyncio.Task[None] | None = None  # the close in flight; awaited when the socket ends

    def revoke(self, reason: str) -> None:
        """End this connection's login (on its loop): close it, or downgrade an opted-in consumer to anonymous."""
        if self.closing or not _registry.forget(self):
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
        """The application's ``receive``; a consumer without a channel layer gets its notice before the next frame."""
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
        try:
            await self.send({"type": "websocket.close", "code": AUTH_REVOKED, "reason": f"login ended: {reason}"})
        except Exception:
            logger.debug("The connection was gone before it could be closed.", exc_info=True)


class _Registry:
    """The followed connections of this process, by session tag and by user key; safe to use from any thread.

    The indexes hold lists, not sets: a session or a user has a few sockets (a tab or device each), and a one-item
    list costs 64 bytes where a set costs 216 (measured by benchmarks/revocation_cost.py).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_session: dict[str, list[_Watch]] = {}
        self.by_user: dict[str, list[_Watch]] = {}
        self.pending: set[_Watch] = set()  # registered before their user is known: during the handshake only

    def add(self, watch: _Watch) -> None:
        with self.lock:
            self.add_locked(watch)

    def add_locked(self, watch: _Watch) -> None:
        if watch.session is not None:
            self.by_session.setdefault(watch.session, []).append(watch)
        if watch.user is not None:
            self.by_user.setdefault(watch.user, []).append(watch)
        else:
            self.pending.add(watch)

    def forget(self, watch: _Watch) -> bool:
        """Take ``watch`` out of the registry; whether it was in."""
        with self.lock:
            return self.forget_locked(watch)

    def forget_locked(self, watch: _Watch) -> bool:
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

    def rebind(self, watch: _Watch, session_key: str | None, user: str) -> str | None:
        """Register ``watch`` anew under ``session_key`` and ``user``, atomically (a revocation on another thread
        sees it either before or after); the reason of a revocation of ``user`` it missed while pending, if any."""
        session = watch.session if session_key == watch.session_key else session_tag(session_key or "")
        with self.lock:
            self.forget_locked(watch)
            watch.session_key = session_key
            watch.session = session if session_key else None
            watch.user = user
            missed, watch.missed_users = watch.missed_users, None
            self.add_locked(watch)
        return missed.get(user) if missed else None

    def matching(self, session: str | None, user: str | None, reason: str) -> list[_Watch]:
        """The watches of ``session`` or ``user``; a connection whose user is not known yet notes the user's."""
        with self.lock:
            found = set(self.by_session.get(session, ())) if session is not None else set()
            if user is not None:
                found.update(self.by_user.get(user, ()))
                for watch in self.pending:
                    if watch.missed_users is None:
                        watch.missed_users = {}
                    watch.missed_users[user] = reason
            return list(found)

    def count(self) -> int:
        with self.lock:
            watches: set[_Watch] = set(self.pending)
            for members in (*self.by_session.values(), *self.by_user.values()):
                watches.update(members)
            return len(watches)


_registry = _Registry()


def followed_connections() -> int:
    """How many connections of this process are followed right now (for metrics and tests)."""
    return _registry.count()


def _revoke_here(session: str | None, user: str | None, reason: str) -> int:
    """Revoke this process's matching connections, each on its own loop; how many matched."""
    watches = _registry.matching(session, user, reason)
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


# Listening ---------------------------------------------------------------------------------------------------------


class _Listener:
    """One per event loop holding followed connections: a channel in ``REVOCATION_GROUP`` and the task reading it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.members = 0
        self.ready = asyncio.Event()
        self.task = loop.create_task(self.run(), name="tether revocation listener")

    async def run(self) -> None:
        layer = self.layer
        channel: str | None = None
        joined = False
        backoff = _MIN_BACKOFF
        renew = min(float(getattr(layer, "group_expiry", 86400)) / 2, _MAX_RENEW_SECONDS)
        try:
            while True:
                try:
                    if channel is None:
                        channel = await layer.new_channel("tether-revocations.")
                    await layer.group_add(REVOCATION_GROUP, channel)
                    joined = True
                    self.ready.set()
                    backoff = _MIN_BACKOFF
                    loop = asyncio.get_running_loop()
                    renew_at = loop.time() + renew
                    while loop.time() < renew_at:
                        try:
                            message = await asyncio.wait_for(layer.receive(channel), renew_at - loop.time())
                        except asyncio.TimeoutError:
                            break
                        _handle_broadcast(message)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The connections of this process are still revoked locally; other processes' revocations are
                    # missed until the layer is back, so say so.
                    logger.exception(
                        "The revocation listener lost the channel layer %r; retrying in %.1f s. Logouts in other "
                        "processes do not close this process's sockets meanwhile.",
                        _layer_alias(),
                        backoff,
                    )
                    self.ready.set()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
        finally:
            if joined and channel is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(layer.group_discard(REVOCATION_GROUP, channel), 1.0)


def _handle_broadcast(message: Message) -> None:
    if message.get("origin") == _process_id():
        return  # this process revoked its own connections when it sent the message
    session, user, reason = message.get("session"), message.get("user"), message.get("reason")
    if not (session is None or isinstance(session, str)) or not (user is None or isinstance(user, str)):
        logger.warning("Ignored a malformed revocation message on the channel layer: %r", message)
        return
    _revoke_here(session, user, reason if isinstance(reason, str) else "revoked")


#: Each loop's listener, or None for a loop where there is no layer to listen to (decided at its first connection).
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Listener | None] = weakref.WeakKeyDictionary()
#: Tasks that outlive the call that started them (a listener leaving the group, a broadcast sent from the loop's own
#: thread), kept until they are done.
_background: set[asyncio.Task[None]] = set()


async def _join(loop: asyncio.AbstractEventLoop) -> None:
    """Count a followed connection on ``loop``; start the loop's listener with the first one and wait until ready."""
    if loop in _listeners:
        listener = _listeners[loop]
        if listener is None:
            return  # no shared layer: this process's revocations are all there are
    else:
        layer = _shared_layer()
        listener = _listeners[loop] = None if layer is None else _Listener(loop, layer)
        if listener is None:
            return
    listener.members += 1
    if not listener.ready.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(listener.ready.wait(), _LISTENER_READY_TIMEOUT)


def _leave(loop: asyncio.AbstractEventLoop) -> None:
    """Count a followed connection out; the last one out stops the loop's listener (which leaves the group)."""
    listener = _listeners.get(loop)
    if listener is None:
        return
    listener.members -= 1
    if listener.members <= 0:
        del _listeners[loop]
        listener.task.cancel()
        _background.add(listener.task)
        listener.task.add_done_callback(_background.discard)


# Following a connection (used by AuthMiddleware and TokenAuthMiddleware) ----------------------------------------


def watch_of(scope: Scope) -> _Watch | None:
    """The followed-connection record in ``scope``, if any."""
    watch = scope.get(_SCOPE_KEY)
    return watch if isinstance(watch, _Watch) else None


async def start_following(scope: Scope, receive: Receive, send: Send) -> tuple[Receive, Send, bool]:
    """Follow the WebSocket of ``scope`` (modified in place) if following is on: the receive and send to pass on, and
    whether this call started following (and so must call ``finish_following`` when the connection ends).

    The connection is registered before its user is looked up, under its session, so that a logout that happens
    while the user is being read still reaches it. The loop's listener has joined the group before this returns.
    """
    if scope.get("type") != "websocket" or not _enabled() or watch_of(scope) is not None:
        return receive, send, False
    loop = asyncio.get_running_loop()
    watch = _Watch(loop, receive, send)
    key = watch.session_key = scope_session_key(scope)
    watch.session = session_tag(key) if key else None
    scope[_SCOPE_KEY] = watch
    _registry.add(watch)
    await _join(loop)
    return watch.receive_with_notices, watch.send_unless_closed, True


def _registry_has(watch: _Watch) -> bool:
    with _registry.lock:
        if watch in _registry.pending:
            return True
        if watch.session is not None and watch in _registry.by_session.get(watch.session, ()):
            return True
        return watch.user is not None and watch in _registry.by_user.get(watch.user, ())


def follow(scope: Scope, user: Any, session_key: str | None) -> None:
    """Bind the followed connection of ``scope`` to ``user`` and the session ``session_key`` (the scope's, or the one
    a token was made from; None for a token bound to no session); stop following an anonymous connection.

    The session's expiry date is read with those of the other connections that opened meanwhile, in one query, and
    then arms the connection's expiry timer.
    """
    watch = watch_of(scope)
    if watch is None or watch.closing:
        return
    if not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        stop_following(scope)
        return
    missed = _registry.rebind(watch, session_key, user_key(user))
    if missed is not None:
        watch.revoke(missed)  # the user's logins ended while this one was being looked up
        return
    if session_key:
        _expiry_reader(watch.loop).add(watch, session_key)


def scope_session_key(scope: Scope) -> str | None:
    """The key of the scope's session (building the lazy store, without loading it), or None."""
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    return key if isinstance(key, str) and key else None


def stop_following(scope: Scope) -> None:
    """Stop following the connection of ``scope`` (its user logged out there, or it is anonymous)."""
    watch = watch_of(scope)
    if watch is not None:
        _registry.forget(watch)
        if watch.expiry is not None:
            watch.expiry.cancel()
            watch.expiry = None


async def finish_following(scope: Scope) -> None:
    """The connection of ``scope`` ended: forget it, cancel its timer, and finish or cancel what it started."""
    watch = watch_of(scope)
    if watch is None:
        return
    stop_following(scope)
    _leave(watch.loop)
    # Waits that do not raise what the task raised, but do raise a cancellation of the connection's own task.
    if watch.check is not None:
        watch.check.cancel()  # an expiry check is of no use any more
        await asyncio.gather(watch.check, return_exceptions=True)
    if watch.closer is not None:
        await asyncio.wait({watch.closer}, timeout=_CLOSER_GRACE)  # a close or notice in flight is let finish
        if not watch.closer.done():
            watch.closer.cancel()
            await asyncio.gather(watch.closer, return_exceptions=True)


def carry_on_anonymous(consumer: Any) -> bool:
    """Keep ``consumer``'s connection open when its login ends: ``scope["user"]`` becomes ``AnonymousUser`` instead.

    Call it in ``connect()``. The consumer then receives an ``auth.revoked`` message (``{"type": "auth.revoked",
    "reason": ...}``) through its ``auth_revoked`` handler, which it must define (``TypeError`` otherwise); the
    message comes on the consumer's channel, at once. A consumer without a channel layer gets it just before the
    next frame from its client. Returns whether the connection is followed at all (False without
    ``AuthMiddleware``/``TokenAuthMiddleware``, with ``TETHER_FOLLOW_LOGIN = False``, or for an anonymous
    connection).
    """
    if not callable(getattr(consumer, "auth_revoked", None)):
        raise TypeError(
            f"{type(consumer).__name__} calls carry_on_anonymous() but has no auth_revoked() handler; define "
            "'async def auth_revoked(self, message)' (or a plain method in a sync consumer) to hear that the login "
            "ended."
        )
    scope = consumer.scope
    watch = watch_of(scope)
    if watch is None or not _registry_has(watch):
        return False
    watch.consumer_scope = scope
    layer, channel = getattr(consumer, "channel_layer", None), getattr(consumer, "channel_name", None)
    watch.notify = (layer, channel) if layer is not None and isinstance(channel, str) else None
    return True


# Session expiry ------------------------------------------------------------------------------------------------------


def _session_store_class() -> type[SessionBase]:
    from tether.sessions import _session_store_class

    return _session_store_class()


def _stored_expiries(session_keys: list[str]) -> dict[str, datetime.datetime | None]:
    """When each stored session of ``session_keys`` expires (database thread); a key that is missing from the answer
    names a session that is gone, None one whose expiry cannot be told.

    Engines backed by a model (``db``, ``cached_db``) know it exactly, all keys in one query. Others are asked each
    session's ``get_expiry_date()``, exact for a session with an explicit ``set_expiry()`` and otherwise counted from
    now, which is later than the truth; the expiry check reads the session again when the timer fires.
    """
    store_class = _session_store_class()
    model_class = getattr(store_class, "get_model_class", None)
    if model_class is not None:
        rows = model_class().objects.filter(session_key__in=session_keys).values_list("session_key", "expire_date")
        return dict(rows)
    expiries: dict[str, datetime.datetime | None] = {}
    for session_key in session_keys:
        try:
            store = store_class(session_key)
            store.load()
            expiries[session_key] = store.get_expiry_date()
        except Exception:
            logger.debug("Could not read the expiry of a session.", exc_info=True)
            expiries[session_key] = None
    return expiries


class _ExpiryReader:
    """Reads the expiry dates of the sessions of one loop's newly followed connections, together.

    A connection waits up to ``_EXPIRY_READ_DELAY`` for its timer to be armed, and a burst of connections costs one
    query instead of one each on the handshake's path (a primary-key query and a database thread hop are about
    0.5 ms on SQLite). One timer handle and at most one task per loop, owned here.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[str, list[_Watch]] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def add(self, watch: _Watch, session_key: str) -> None:
        self.waiting.setdefault(session_key, []).append(watch)
        if self.handle is None and self.task is None:
            self.handle = self.loop.call_later(_EXPIRY_READ_DELAY, self.start)

    def start(self) -> None:
        self.handle = None
        batch, self.waiting = self.waiting, {}
        self.task = self.loop.create_task(self.read(batch))

    async def read(self, batch: dict[str, list[_Watch]]) -> None:
        try:
            expiries = await database_sync_to_async(_stored_expiries)(list(batch))
        except Exception:
            logger.exception(
                "Could not read the expiry dates of %d sessions; their sockets close at logout only.", len(batch)
            )
            return
        finally:
            self.task = None
            if self.waiting and self.handle is None:
                self.handle = self.loop.call_later(_EXPIRY_READ_DELAY, self.start)
        for session_key, watches in batch.items():
            for watch in watches:
                if watch.closing or watch.session_key != session_key or not _registry_has(watch):
                    continue  # gone, or following another login since
                if session_key not in expiries:
                    watch.revoke("session_ended")  # deleted between the handshake and now
                elif (expiry := expiries[session_key]) is not None:
                    _arm_expiry(watch, session_key, expiry)


_expiry_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ExpiryReader] = weakref.WeakKeyDictionary()


def _expiry_reader(loop: asyncio.AbstractEventLoop) -> _ExpiryReader:
    reader = _expiry_readers.get(loop)
    if reader is None:
        reader = _expiry_readers[loop] = _ExpiryReader(loop)
    return reader


def _session_still_open(session_key: str, user: str) -> datetime.datetime | None:
    """The new expiry of session ``session_key`` when it still logs ``user`` in, else None (database thread)."""
    from django.contrib.auth import SESSION_KEY

    store = _session_store_class()(session_key)
    if store.get(SESSION_KEY) != user:
        return None
    expiry = _stored_expiries([session_key]).get(session_key)
    if expiry is None or expiry <= timezone.now():
        return None
    return expiry


def _arm_expiry(watch: _Watch, session_key: str, expiry: datetime.datetime) -> None:
    if watch.expiry is not None:
        watch.expiry.cancel()
    delay = max((expiry - timezone.now()).total_seconds(), 0.0)
    watch.expiry = watch.loop.call_at(watch.loop.time() + delay, _expiry_due, watch, session_key)


def _expiry_due(watch: _Watch, session_key: str) -> None:
    watch.expiry = None
    if not watch.closing and watch.check is None:
        watch.check = watch.loop.create_task(_check_expiry(watch, session_key))


async def _check_expiry(watch: _Watch, session_key: str) -> None:
    """The session's expiry date came: read it again (activity elsewhere may have extended it), re-arm or revoke."""
    try:
        if watch.user is None:
            return
        expiry = await database_sync_to_async(_session_still_open)(session_key, watch.user)
    finally:
        watch.check = None
    if expiry is None:
        watch.revoke("session_expired")
    else:
        later = max(expiry, timezone.now() + datetime.timedelta(seconds=_MIN_RECHECK))
        _arm_expiry(watch, session_key, later)


# Revoking ----------------------------------------------------------------------------------------------------------


def _message(session: str | None, user: str | None, reason: str) -> Message:
    return {"type": "tether.revoke", "session": session, "user": user, "reason": reason, "origin": _process_id()}


def _publish(session: str | None, user: str | None, reason: str) -> None:
    """Revoke here, then tell the other processes; from sync code (a signal receiver, a view)."""
    _revoke_here(session, user, reason)
    if not _enabled():
        return
    layer = _shared_layer()
    if layer is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # Called from the event loop's own thread: it cannot block, so the send runs as a task that the registry
        # keeps until it is done.
        task = loop.create_task(_send_revocation(layer, _message(session, user, reason)))
        _background.add(task)
        task.add_done_callback(_background.discard)
        return
    async_to_sync(_send_revocation)(layer, _message(session, user, reason))


async def _send_revocation(layer: BaseChannelLayer, message: Message) -> None:
    try:
        await layer.group_send(REVOCATION_GROUP, message)
    except Exception:
        logger.exception(
            "Could not tell the other processes that a login ended (%s): their sockets of that %s stay open. Check "
            "the channel layer %r.",
            message["reason"],
            "session" if message["session"] else "user",
            _layer_alias(),
        )


async def _apublish(session: str | None, user: str | None, reason: str) -> None:
    _revoke_here(session, user, reason)
    if _enabled():
        layer = _shared_layer()
        if layer is not None:
            await _send_revocation(layer, _message(session, user, reason))


def revoke_session(session_key: str, *, reason: str = "session_ended") -> None:
    """Close (or downgrade) every followed WebSocket of session ``session_key``, in every process; from sync code.

    tether calls it on logout and when a database session is deleted; call it when you end a session another way
    (a cache session deleted by hand, a custom session model). Returns once the layer has taken the message.
    """
    if not isinstance(session_key, str) or not session_key:
        raise ValueError(f"revoke_session() needs a session key (request.session.session_key), not {session_key!r}.")
    _publish(session_tag(session_key), None, reason)


def revoke_user(user: Any, *, reason: str = "revoked") -> None:
    """Close (or downgrade) every followed WebSocket of ``user`` (a user or its primary key), in every process.

    tether calls it when the password changes, the user is made inactive or deleted; call it when a
    ``QuerySet.update()`` or raw SQL changes them, which sends no signal. From sync code; ``arevoke_user`` in async.
    """
    _publish(None, _user_key_of(user), reason)


async def arevoke_session(session_key: str, *, reason: str = "session_ended") -> None:
    """``revoke_session`` for async code."""
    if not isinstance(session_key, str) or not session_key:
        raise ValueError(f"arevoke_session() needs a session key, not {session_key!r}.")
    await _apublish(session_tag(session_key), None, reason)


async def arevoke_user(user: Any, *, reason: str = "revoked") -> None:
    """``revoke_user`` for async code."""
    await _apublish(None, _user_key_of(user), reason)


def _user_key_of(user: Any) -> str:
    if hasattr(user, "_meta"):
        if getattr(user, "pk", None) is None:
            raise ValueError(f"revoke_user() needs a saved user or a primary key, not {user!r}.")
        return user_key(user)
    if isinstance(user, (str, int)) and not isinstance(user, bool):
        return str(user)
    raise TypeError(f"revoke_user() takes a user instance or its primary key, not {user!r}.")


# Signals (connected by tether.apps.TetherConfig.ready) -------------------------------------------------------------

#: Attribute a user instance carries from load to save: the password hash and is_active it was loaded with.
_LOADED = "_tether_loaded_login"


def _remember_login_fields(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_init of the user model: note the password and is_active, so a save can tell what changed."""
    fields = instance.__dict__
    instance.__dict__[_LOADED] = (fields.get("password"), fields.get("is_active"))


def _user_saved(sender: Any, instance: Any, created: bool, update_fields: Iterable[str] | None, **kwargs: Any) -> None:
    """post_save of the user model: a new password or ``is_active`` turned False ends the user's logins.

    Only what the save wrote counts: with ``update_fields``, a field left out keeps its stored value, whatever the
    instance holds.
    """
    fields = instance.__dict__
    saved = None if update_fields is None else frozenset(update_fields)
    loaded_password, loaded_active = fields.get(_LOADED, (None, None))
    password = fields.get("password") if saved is None or "password" in saved else loaded_password
    active = fields.get("is_active") if saved is None or "is_active" in saved else loaded_active
    fields[_LOADED] = (password, active)
    if created or instance.pk is None:
        return
    # A password that was deferred when the user was loaded is not known: it changed for sure only when the save
    # names it.
    known = loaded_password is not None or (saved is not None and "password" in saved)
    if password is not None and password != loaded_password and known:
        revoke_user(instance, reason="password_changed")
    elif loaded_active is not False and active is False:
        revoke_user(instance, reason="inactive")


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is not None:
        revoke_user(instance, reason="user_deleted")


#: Per thread, the session a logout just revoked, so that the deletion of its stored copy that follows (the flush)
#: is not broadcast a second time.
_just_logged_out = threading.local()


def logged_out(session_key: str) -> None:
    """Session ``session_key`` is being logged out (before its flush): revoke its sockets, reason ``"logout"``."""
    _just_logged_out.key = session_key
    revoke_session(session_key, reason="logout")


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """user_logged_out from a Django view: the request's session ends (tether's own logout() revokes by itself)."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        logged_out(key)


def _session_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_delete of a database session: flushed, cycled or deleted by hand. Skips sessions nobody could be
    logged in by (no user in them, or expired, as ``clearsessions`` deletes them), so those cost no broadcast."""
    from django.contrib.auth import SESSION_KEY

    if getattr(_just_logged_out, "key", None) == instance.session_key:
        _just_logged_out.key = None
        return
    expire_date = getattr(instance, "expire_date", None)
    if expire_date is not None and expire_date <= timezone.now():
        return
    try:
        data = instance.get_decoded()
    except Exception:
        data = {}
    if SESSION_KEY in data:
        revoke_session(instance.session_key, reason="session_ended")


def connect_signals() -> None:
    """Connect the receivers that end the logins; called once from ``TetherConfig.ready()``."""
    from django.apps import apps
    from django.contrib.auth import get_user_model, user_logged_out
    from django.db.models.signals import post_delete, post_init, post_save

    user_model = get_user_model()
    uid = "tether.revocation"
    post_init.connect(_remember_login_fields, sender=user_model, dispatch_uid=uid)
    post_save.connect(_user_saved, sender=user_model, dispatch_uid=uid)
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid=uid)
    user_logged_out.connect(_logged_out, dispatch_uid=uid)
    if apps.is_installed("django.contrib.sessions"):
        from django.contrib.sessions.models import Session

        post_delete.connect(_session_deleted, sender=Session, dispatch_uid=uid)
