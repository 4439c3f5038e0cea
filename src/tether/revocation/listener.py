"""How the processes hear of each other's revocations: one listener per event loop on the channel layer.

Each loop that holds followed connections runs one task with one channel in ``REVOCATION_GROUP``; the first followed
connection of the loop starts it (and waits until it has joined), the last one out stops it. ``send_revocation``
publishes with one ``group_send``, which the Redis layer delivers once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import weakref
from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed

from tether.revocation.config import layer_alias, shared_layer
from tether.revocation.registry import revoke_here
from tether.types import Message

if TYPE_CHECKING:
    from tether.layers.base import BaseChannelLayer

__all__ = ["REVOCATION_GROUP", "background", "join", "leave", "revocation_message", "send_revocation"]

logger = logging.getLogger("tether.revocation")

#: The group every listening process joins with one channel per event loop.
REVOCATION_GROUP = "tether.auth.revocations"
#: How long a new connection waits, at most, for its loop's listener to join the group before it carries on.
#: Past it (the layer is unreachable and retrying), the loop's later connections do not wait at all.
_LISTENER_READY_TIMEOUT = 2.0
#: How long a revocation waits for the layer to take its message: a logout view must not hang on a Redis outage.
_SEND_TIMEOUT = 2.0
#: The listener renews its group membership this often (the Redis layer forgets members after ``group_expiry``).
_MAX_RENEW_SECONDS = 3600.0
#: Backoff bounds of a listener whose layer fails (Redis gone): it retries, and revokes locally meanwhile.
_MIN_BACKOFF, _MAX_BACKOFF = 0.5, 30.0

_origin: tuple[int, str] = (0, "")


def process_id() -> str:
    """An id for this process, new after a fork, so a process skips only the broadcasts it sent itself."""
    global _origin
    pid = os.getpid()
    if _origin[0] != pid:
        _origin = (pid, f"{pid}-{secrets.token_hex(6)}")
    return _origin[1]


class _Listener:
    """One per event loop holding followed connections: a channel in ``REVOCATION_GROUP`` and the task reading it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.members = 0
        self.ready = asyncio.Event()
        self.task = loop.create_task(self.run(), name="tether revocation listener")

    async def run(self) -> None:
        """Join the group, then revoke what is heard; renew the membership; retry with backoff when the layer fails."""
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
                        layer_alias(),
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
    """A revocation heard from another process: revoke the matching connections here (checking the message's shape)."""
    if message.get("origin") == process_id():
        return  # this process revoked its own connections when it sent the message
    session, user, reason = message.get("session"), message.get("user"), message.get("reason")
    if not (session is None or isinstance(session, str)) or not (user is None or isinstance(user, str)):
        logger.warning("Ignored a malformed revocation message on the channel layer: %r", message)
        return
    revoke_here(session, user, reason if isinstance(reason, str) else "revoked")


#: Each loop's listener, or None for a loop where there is no layer to listen to (decided at its first connection).
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Listener | None] = weakref.WeakKeyDictionary()
#: Tasks that outlive the call that started them (a listener leaving the group, a broadcast sent from the loop's own
#: thread), kept until they are done.
background: set[asyncio.Task[None]] = set()


async def join(loop: asyncio.AbstractEventLoop) -> None:
    """Count a followed connection on ``loop``; start the loop's listener with the first one and wait until ready."""
    if loop in _listeners:
        listener = _listeners[loop]
        if listener is None:
            return  # no shared layer: this process's revocations are all there are
    else:
        layer = shared_layer()
        listener = _listeners[loop] = None if layer is None else _Listener(loop, layer)
        if listener is None:
            return
    listener.members += 1
    if not listener.ready.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(listener.ready.wait(), _LISTENER_READY_TIMEOUT)
        if not listener.ready.is_set():
            listener.ready.set()  # stop making connections wait; the listener keeps trying to join
            logger.warning(
                "The revocation listener could not join %r on the channel layer %r within %.0f s; connections carry "
                "on, and logouts in other processes reach this one once it has joined.",
                REVOCATION_GROUP,
                layer_alias(),
                _LISTENER_READY_TIMEOUT,
            )


def leave(loop: asyncio.AbstractEventLoop) -> None:
    """Count a followed connection out; the last one out stops the loop's listener (which leaves the group)."""
    listener = _listeners.get(loop)
    if listener is None:
        return
    listener.members -= 1
    if listener.members <= 0:
        del _listeners[loop]
        listener.task.cancel()
        background.add(listener.task)
        listener.task.add_done_callback(background.discard)


def _forget_loops_without_layer(setting: str, **kwargs: Any) -> None:
    """A test changed the layers: loops that had none to listen to decide again at their next connection."""
    if setting in {"CHANNEL_LAYERS", "TETHER_FOLLOW_LOGIN_LAYER"}:
        for loop in [loop for loop, listener in _listeners.items() if listener is None]:
            del _listeners[loop]


setting_changed.connect(_forget_loops_without_layer, dispatch_uid="tether.revocation.listener")


def revocation_message(session: str | None, user: str | None, reason: str) -> Message:
    """The message a revocation broadcasts: session tag or user key, the reason, and the sending process."""
    return {"type": "tether.revoke", "session": session, "user": user, "reason": reason, "origin": process_id()}


async def send_revocation(layer: BaseChannelLayer, message: Message) -> None:
    """Broadcast ``message`` to every listening process; a failure (or a layer slower than ``_SEND_TIMEOUT``) is
    logged, never raised, so that ending a login never fails because the layer is down."""
    try:
        await asyncio.wait_for(layer.group_send(REVOCATION_GROUP, message), _SEND_TIMEOUT)
    except Exception:
        logger.exception(
            "Could not tell the other processes that a login ended (%s): their sockets of that %s stay open. Check "
            "the channel layer %r.",
            message["reason"],
            "session" if message["session"] else "user",
            layer_alias(),
        )
