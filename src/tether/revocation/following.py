"""Following one connection: what ``AuthMiddleware`` and ``TokenAuthMiddleware`` call, and ``carry_on_anonymous``.

``start_following`` registers a WebSocket before its user is looked up (so a logout during the lookup still reaches
it) and gives the application a ``send`` that drops what it sends after a revocation's close; ``follow`` binds it to
its user and session; ``finish_following`` forgets it when it ends. The record travels in the scope (every copy of
the scope shares it), so ``login``, ``logout`` and consumers find it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tether.revocation.config import enabled
from tether.revocation.expiry import expiry_reader
from tether.revocation.listener import join, leave
from tether.revocation.registry import Watch, registry, session_tag, user_key
from tether.types import Receive, Scope, Send

__all__ = [
    "carry_on_anonymous",
    "finish_following",
    "follow",
    "scope_session_key",
    "start_following",
    "stop_following",
    "watch_of",
]

#: The scope key under which the followed connection's ``Watch`` travels (shared by every copy of the scope).
_SCOPE_KEY = "auth_watch"
#: How long a connection that ended waits for its close (or notice) in flight to be sent, at most (seconds).
_CLOSER_GRACE = 1.0


def watch_of(scope: Scope) -> Watch | None:
    """The followed-connection record in ``scope``, if any."""
    watch = scope.get(_SCOPE_KEY)
    return watch if isinstance(watch, Watch) else None


async def start_following(scope: Scope, receive: Receive, send: Send) -> tuple[Receive, Send, bool]:
    """Follow the WebSocket of ``scope`` (modified in place) if following is on: the receive and send to pass on, and
    whether this call started following (and so must call ``finish_following`` when the connection ends).

    The connection is registered before its user is looked up, under its session, so that a logout that happens
    while the user is being read still reaches it. The loop's listener has joined the group before this returns.
    """
    if scope.get("type") != "websocket" or not enabled() or watch_of(scope) is not None:
        return receive, send, False
    loop = asyncio.get_running_loop()
    watch = Watch(loop, receive, send)
    key = watch.session_key = scope_session_key(scope)
    watch.session = session_tag(key) if key else None
    scope[_SCOPE_KEY] = watch
    registry.add(watch)
    await join(loop)
    return watch.receive_with_notices, watch.send_unless_closed, True


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
    missed = registry.rebind(watch, session_key, user_key(user))
    if missed is not None:
        watch.revoke(missed)  # this login ended while the connection was being authenticated
        return
    if session_key:
        expiry_reader(watch.loop).add(watch, session_key)


def scope_session_key(scope: Scope) -> str | None:
    """The key of the scope's session (building the lazy store, without loading it), or None."""
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    return key if isinstance(key, str) and key else None


def stop_following(scope: Scope) -> None:
    """Stop following the connection of ``scope`` (its user logged out there, or it is anonymous)."""
    watch = watch_of(scope)
    if watch is not None:
        registry.forget(watch)
        if watch.expiry is not None:
            watch.expiry.cancel()
            watch.expiry = None


async def finish_following(scope: Scope) -> None:
    """The connection of ``scope`` ended: forget it, cancel its timer, and finish or cancel what it started."""
    watch = watch_of(scope)
    if watch is None:
        return
    stop_following(scope)
    leave(watch.loop)
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
    message comes on the consumer's channel, at once. A consumer without a channel layer gets it right after the
    next frame from its client (its receive was waiting already). Returns whether the connection is followed at
    all (False without ``AuthMiddleware``/``TokenAuthMiddleware``, with ``TETHER_FOLLOW_LOGIN = False``, or for an
    anonymous connection).
    """
    if not callable(getattr(consumer, "auth_revoked", None)):
        raise TypeError(
            f"{type(consumer).__name__} calls carry_on_anonymous() but has no auth_revoked() handler; define "
            "'async def auth_revoked(self, message)' (or a plain method in a sync consumer) to hear that the login "
            "ended."
        )
    scope = consumer.scope
    watch = watch_of(scope)
    if watch is None or not registry.has(watch):
        return False
    watch.consumer_scope = scope
    layer, channel = getattr(consumer, "channel_layer", None), getattr(consumer, "channel_name", None)
    watch.notify = (layer, channel) if layer is not None and isinstance(channel, str) else None
    return True
