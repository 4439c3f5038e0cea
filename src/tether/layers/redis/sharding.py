"""Which Redis host holds a channel, a group or a process inbox, when ``hosts`` lists several: consistent hashing.

Each host is placed at many points on a hash ring, named after the host (not its position in the list), so adding
or removing a host moves only the names that hashed to it, and reordering ``hosts`` moves nothing. Every process of
a project must list the same hosts. Sans-I/O.
"""

from __future__ import annotations

import bisect
import hashlib

__all__ = ["HashRing"]

_POINTS_PER_HOST = 160
_CACHE_LIMIT = 50_000


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class HashRing:
    """Map names to one of ``len(identities)`` hosts; ``index_for(name)`` is stable for a given set of hosts."""

    def __init__(self, identities: list[str]) -> None:
        if not identities:
            raise ValueError("A hash ring needs at least one host.")
        self.size = len(identities)
        points = sorted(
            (_point(f"{identity}#{replica}"), index)
            for index, identity in enumerate(identities)
            for replica in range(_POINTS_PER_HOST)
        )
        self._keys = [key for key, _ in points]
        self._hosts = [index for _, index in points]
        self._cache: dict[str, int] = {}

    def index_for(self, name: str) -> int:
        if self.size == 1:
            return 0
        try:
            return self._cache[name]
        except KeyError:
            pass
        position = bisect.bisect(self._keys, _point(name)) % len(self._keys)
        index = self._hosts[position]
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[name] = index
        return index
