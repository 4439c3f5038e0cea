"""Handing a message to a receiver that may be waiting on another event loop.

A layer's receivers usually wait on the loop that delivers to them, but a receiver may sit on another one (sync code
through ``async_to_sync`` runs its own loop in a thread). Its future must be completed on its own loop, and by the time
that loop runs the completion the receiver may have given up (cancelled): the message must then go back to its
channel rather than vanish. Both layers hand over through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tether.types import Message

__all__ = ["hand_over", "running_loop"]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop, or None when called outside one (a delivery from plain sync code)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def hand_over(
    waiter: asyncio.Future[Any],
    message: Message,
    running: asyncio.AbstractEventLoop | None,
    give_back: Callable[[Message], None],
) -> None:
    """Complete ``waiter`` with ``message`` on the waiter's loop (now, when that is ``running``, the caller's loop).

    ``give_back(message)`` is called instead when nobody can take it: the waiter's loop is closed, or the waiter was
    done (cancelled) by the time its loop got to it.
    """
    loop = waiter.get_loop()
    if loop is running:
        waiter.set_result(message)
        return
    try:
        loop.call_soon_threadsafe(_complete, waiter, message, give_back)
    except RuntimeError:  # the waiter's loop is closed: nobody will receive through it
        give_back(message)


def _complete(waiter: asyncio.Future[Any], message: Message, give_back: Callable[[Message], None]) -> None:
    if waiter.done():
        give_back(message)
    else:
        waiter.set_result(message)
