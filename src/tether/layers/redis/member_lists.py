"""The member lists a process was last sent for its groups, so a group frame can name the list by token alone.

``GROUP_SEND`` pushes a process the list of its members of a group once, under a token, and afterwards only the
token while those members stay the same (``storage.py`` has the scheme). The process keeps each list here. A frame
whose token does not match what is kept (the frame with the list expired unread, or the entry was swept) resolves to
None, and the layer asks Redis for the members instead.

A list is checked once, when it arrives, by the layer's ``accept``: it keeps only the members that are channels of
this process and, when encrypting, whose membership tag holds (``codec.py``), and strips the tags. A frame that
carries the same list as the one kept (every frame does with several Redis servers, which send no tokens) reuses the
checked list instead of checking it again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tether.layers.redis.storage import Frame

__all__ = ["MemberLists"]


class _Kept:
    """A group's last list: the token it came under, the entries as the frame carried them, and the members
    accepted from them (in delivery order)."""

    __slots__ = ("entries", "members", "token")

    def __init__(self, token: str | None, entries: list[str], members: list[str]) -> None:
        self.token = token
        self.entries = entries
        self.members = members


class MemberLists:
    """Group -> the token and member list of the last group frame that carried a list; entries unused for
    ``idle_after`` seconds are forgotten by ``sweep()`` (a group this process left, or never hears from again).
    ``accept(group, entries)`` turns a list's entries into the members to deliver to (see the module docs);
    ``order`` rearranges a list before it is kept (the layer delivers in the order its buffers were made)."""

    def __init__(
        self,
        accept: Callable[[str, list[str]], list[str]] | None = None,
        order: Callable[[list[str]], list[str]] | None = None,
        idle_after: float = 600.0,
    ) -> None:
        self._accept = accept
        self._order = order
        self._idle_after = idle_after
        self._lists: dict[str, _Kept] = {}
        self._used: dict[str, float] = {}
        self._next_sweep = time.monotonic() + idle_after
        self._outdated = False  # set by outdate(), from any thread; the reader clears the lists at its next frame

    def resolve(self, frame: Frame) -> list[str] | None:
        """The members ``frame`` (a group frame) is for: the list it carries, which is kept, or the one kept under
        its token; None when that is not known here."""
        if self._outdated:
            self._outdated = False
            self.clear()
        group = frame.group
        kept = self._lists.get(group)
        if frame.targets:
            if kept is not None and kept.entries == frame.targets:
                kept.token = frame.token
            else:
                kept = self._lists[group] = _Kept(frame.token, frame.targets, self.accepted(group, frame.targets))
        elif kept is None or kept.token is None or kept.token != frame.token:
            return None
        self._used[group] = time.monotonic()
        return kept.members

    def accepted(self, group: str, entries: list[str]) -> list[str]:
        """The members of ``group`` to deliver to, out of a list's ``entries`` (checked, interned and ordered)."""
        members = self._accept(group, entries) if self._accept is not None else entries
        # Interned, as new_channel() names are: each delivery then finds its channel's buffer by identity.
        members = [sys.intern(name) for name in members]
        if self._order is not None:
            members = self._order(members)
        return members

    def outdate(self) -> None:
        """Check every list again when it next arrives: a channel that ``accept`` left out is back (the process
        forgot it while nobody received on it). Lists named by token only are then asked of Redis once."""
        self._outdated = True

    def sweep(self) -> None:
        """Forget lists unused for ``idle_after`` seconds (at most once per ``idle_after``)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._idle_after
        for group in [group for group, used in self._used.items() if now - used > self._idle_after]:
            del self._used[group]
            self._lists.pop(group, None)

    def sizes(self) -> dict[str, int]:
        """Group -> how many members of this process its kept list holds."""
        return {group: len(kept.members) for group, kept in list(self._lists.items())}

    def clear(self) -> None:
        self._lists.clear()
        self._used.clear()

    def __len__(self) -> int:
        return len(self._lists)
