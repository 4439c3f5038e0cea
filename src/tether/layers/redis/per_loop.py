"""The state a layer keeps per event loop: asyncio connections and tasks belong to the loop that made them."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

logger = logging.getLogger("tether.layers.redis")


_State = TypeVar("_State")


class PerLoop(Generic[_State]):
    """State a layer keeps per event loop (asyncio connections belong to the loop that made them).

    ``get()`` returns the state of the running loop, building it with ``factory`` on first use. When a loop that has
    state closes (``async_to_sync`` closes its loop after each call), ``closer`` runs first, so no connection or task
    outlives its loop.
    """

    def __init__(self, factory: Callable[[], _State], closer: Callable[[_State], Awaitable[None]]) -> None:
        self._factory = factory
        self._closer = closer
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _State] = weakref.WeakKeyDictionary()
        self._last: tuple[asyncio.AbstractEventLoop, _State] | None = None  # the hot path's loop, looked up once

    def get(self, loop: asyncio.AbstractEventLoop | None = None) -> _State:
        """The state of ``loop``, by default the running one (pass it when you have it: this is on hot paths)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = self._factory()
            self._hook_close(loop)
        self._last = (loop, state)
        return state

    def peek(self) -> _State | None:
        """The running loop's state, or None when it has none yet."""
        try:
            return self._states.get(asyncio.get_running_loop())
        except RuntimeError:
            return None

    async def close_current(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = None
        state = self._states.pop(loop, None)
        if state is not None:
            await self._closer(state)

    def _hook_close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's connections and tasks when the loop itself is closed.

        Why: ``async_to_sync`` and ``asyncio.run`` make a loop per call, and Django code calls the layer from them
        (``async_to_sync(layer.group_send)`` in a view). Each such loop gets its own connections here; nobody calls
        ``close()`` for them, and a loop that is closed with open sockets and pending tasks leaks both and warns.
        asyncio has no "loop closing" callback, so the loop's ``close`` is wrapped once, shared by every layer.

        Limits: it runs only if the loop is closed while not running (``asyncio.run`` and asgiref do so); loops that
        refuse attribute assignment (uvloop) are left alone, which is harmless because such loops live as long as
        the process; and a loop that is garbage-collected without ``close()`` skips it, as it skips everything.
        """
        hooks = getattr(loop, "_tether_close_hooks", None)
        if hooks is None:
            hooks = []
            original_close = loop.close

            def close() -> None:
                for hook in list(hooks):
                    hook(loop)
                hooks.clear()
                original_close()

            try:
                loop.close = close  # type: ignore[method-assign]
                loop._tether_close_hooks = hooks  # type: ignore[attr-defined]
            except (AttributeError, TypeError):  # uvloop and friends: such loops live as long as the process
                return
        hooks.append(self._close_on)

    def _close_on(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._last is not None and self._last[0] is loop:
            self._last = None
        state = self._states.pop(loop, None)
        if state is None or loop.is_closed():
            return
        if loop.is_running():  # closing a running loop fails anyway; leave the state to the garbage collector
            return
        try:
            loop.run_until_complete(self._closer(state))
        except Exception:
            logger.exception("Closing the Redis layer's connections on a closing event loop failed")
