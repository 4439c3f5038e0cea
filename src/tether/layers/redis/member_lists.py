"""The member lists a process was last sent for its groups, so a group frame can name the list by token alone.

``GROUP_SEND`` pushes a process the list of its members of a group once, under a token, and afterwards only the
token while those members stay the same (``storage.py`` has the scheme). The process keeps each list here. A frame
whose token does not match what is kept (the frame with the list expired unread, or the entry was swept) resolves to
None, and the layer asks Redis for the members instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tether.layers.redis.storage import Frame

__all__ = ["MemberLists"]


class MemberLists:
    """Group -> the token and member list of the last group frame that carried a list; entries unused for
    ``idle_after`` seconds are forgotten by ``sweep()`` (a group this process left, or never hears from again).
    ``order`` rearranges a list before it is kept (the layer delivers in the order its buffers were made)."""

    def __init__(self, order: Callable[[list[str]], list[str]] | None = None, idle_after: float = 600.0) -> None:
        self._order = order
        self._idle_after = idle_after
        self._lists: dict[str, tuple[str, list[str]]] = {}
        self._used: dict[str, float] = {}
        self._next_sweep = time.monotonic() + idle_after

    def resolve(self, frame: Frame) -> list[str] | None:
        """The members ``frame`` (a group frame with a token) is for: the list it carries, which is kept, or the
        one kept under its token; None when that is not known here."""
        group = frame.group
        if frame.targets:
            # Interned, as new_channel() names are: each delivery then finds its channel's buffer by identity.
            members = [sys.intern(name) for name in frame.targets]
            if self._order is not None:
                members = self._order(members)
            self._lists[group] = (frame.token or "", members)
        else:
            kept = self._lists.get(group)
            members = kept[1] if kept is not None and kept[0] == frame.token else None  # type: ignore[assignment]
        if members is not None:
            self._used[group] = time.monotonic()
        return members

    def sweep(self) -> None:
        """Forget lists unused for ``idle_after`` seconds (at most once per ``idle_after``)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._idle_after
        for group in [group for group, used in self._used.items() if now - used > self._idle_after]:
            del self._used[group]
            self._lists.pop(group, None)

    def clear(self) -> None:
        self._lists.clear()
        self._used.clear()

    def __len__(self) -> int:
        return len(self._lists)
