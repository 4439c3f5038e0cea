"""Revoking: ``revoke_session`` and ``revoke_user`` (and their async twins) close the matching followed
connections of this process at once, then tell the other processes through the channel layer."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync

from tether.revocation.config import enabled, shared_layer
from tether.revocation.listener import background, revocation_message, send_revocation
from tether.revocation.registry import revoke_here, session_tag, user_key

__all__ = ["arevoke_session", "arevoke_user", "revoke_session", "revoke_user"]


def _checked(reason: Any) -> str:
    if not isinstance(reason, str) or not reason:
        raise TypeError(f"A revocation's reason is a non-empty str (it reaches consumers and logs), not {reason!r}.")
    return reason


def publish(session: str | None, user: str | None, reason: str) -> None:
    """Revoke here, then tell the other processes; from sync code (a signal receiver, a view)."""
    revoke_here(session, user, _checked(reason))
    if not enabled():
        return
    layer = shared_layer()
    if layer is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # Called from the event loop's own thread: it cannot block, so the send runs as a task that the registry
        # keeps until it is done.
        task = loop.create_task(send_revocation(layer, revocation_message(session, user, reason)))
        background.add(task)
        task.add_done_callback(background.discard)
        return
    async_to_sync(send_revocation)(layer, revocation_message(session, user, reason))


async def apublish(session: str | None, user: str | None, reason: str) -> None:
    """``publish`` for async code: revoke here, then await the broadcast."""
    revoke_here(session, user, _checked(reason))
    if enabled():
        layer = shared_layer()
        if layer is not None:
            await send_revocation(layer, revocation_message(session, user, reason))


def revoke_session(session_key: str, *, reason: str = "session_ended") -> None:
    """Close (or downgrade) every followed WebSocket of session ``session_key``, in every process; from sync code.

    tether calls it on logout and when a database session is deleted; call it when you end a session another way
    (a cache session deleted by hand, a custom session model). Returns once the layer has taken the message (two
    seconds at most, logged when it could not); called on an event loop's own thread, it returns at once and a task
    sends the message.
    """
    if not isinstance(session_key, str) or not session_key:
        raise ValueError(f"revoke_session() needs a session key (request.session.session_key), not {session_key!r}.")
    publish(session_tag(session_key), None, reason)


def revoke_user(user: Any, *, reason: str = "revoked") -> None:
    """Close (or downgrade) every followed WebSocket of ``user`` (a user or its primary key), in every process.

    tether calls it when the password changes, the user is made inactive or deleted; call it when a
    ``QuerySet.update()`` or raw SQL changes them, which sends no signal. From sync code; ``arevoke_user`` in async.
    """
    publish(None, _user_key_of(user), reason)


async def arevoke_session(session_key: str, *, reason: str = "session_ended") -> None:
    """``revoke_session`` for async code."""
    if not isinstance(session_key, str) or not session_key:
        raise ValueError(f"arevoke_session() needs a session key, not {session_key!r}.")
    await apublish(session_tag(session_key), None, reason)


async def arevoke_user(user: Any, *, reason: str = "revoked") -> None:
    """``revoke_user`` for async code."""
    await apublish(None, _user_key_of(user), reason)


def _user_key_of(user: Any) -> str:
    """The registry's name for ``user``, a user instance or a primary key; errors name what was passed."""
    if hasattr(user, "_meta"):
        if getattr(user, "pk", None) is None:
            raise ValueError(f"revoke_user() needs a saved user or a primary key, not {user!r}.")
        return user_key(user)
    if isinstance(user, (str, int)) and not isinstance(user, bool):
        return str(user)
    raise TypeError(f"revoke_user() takes a user instance or its primary key, not {user!r}.")
