"""The process-local channels a Redis layer has, so that what it buffers is bounded by them.

An inbox frame names its targets, and whoever can write to Redis (or a bug) can name any channel with this process's
client id. Buffering for every name would let one frame make the process hold a message per name: 50,000 names,
50,000 messages, each in a buffer of its own. So a target is delivered only when it is a channel this process has:
one with a buffer here (a receiver waits on it, or messages are queued for it, both of which only happen for
channels accepted before), or one ``new_channel()`` made that has not been forgotten. Other targets are dropped and
counted. Then a process holds at most ``capacity`` messages per channel it has, whatever the frames say.

A channel is forgotten when it has had no buffer at every look for ``idle_after`` seconds (the layer gives its
``expiry``): its consumer is gone, or has not received for longer than a message may wait. A ``receive`` on it makes
it known again. ``flush()`` forgets them all. Sans-I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["OwnChannels"]


class OwnChannels:
    """Names made by ``new_channel()`` and still in use; ``has_buffer(name)`` tells whether one is in use now, and
    ``marker`` is what only this process's channel names contain (``.<client id>!``)."""

    def __init__(
        self,
        has_buffer: Callable[[str], bool],
        marker: str,
        idle_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._has_buffer = has_buffer
        self._marker = marker
        self._idle_after = idle_after
        self._clock = clock
        self._look_every = idle_after / 2
        self._next_look = clock() + self._look_every
        #: name -> when it was first seen without a buffer (0.0: it had one at the last look, or is new).
        self._names: dict[str, float] = {}

    def add(self, name: str) -> None:
        self._names[name] = 0.0

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def accept(self, names: list[str]) -> list[str]:
        """The names in ``names`` that are channels of this process (with a buffer here, or known)."""
        known = self._names
        has_buffer = self._has_buffer
        marker = self._marker
        return [name for name in names if marker in name and (has_buffer(name) or name in known)]

    def maybe_forget(self) -> list[str]:
        """``forget_idle()`` when the last look is ``idle_after / 2`` seconds ago; returns the names forgotten."""
        now = self._clock()
        if now < self._next_look:
            return []
        self._next_look = now + self._look_every
        return self.forget_idle(now)

    def forget_idle(self, now: float | None = None) -> list[str]:
        """Look at every name: forget those without a buffer at every look for ``idle_after`` seconds."""
        if now is None:
            now = self._clock()
        forgotten = []
        names = self._names
        for name, idle_since in list(names.items()):
            if self._has_buffer(name):
                names[name] = 0.0
            elif not idle_since:
                names[name] = now
            elif now - idle_since >= self._idle_after:
                del names[name]
                forgotten.append(name)
        return forgotten

    def clear(self) -> None:
        self._names.clear()
