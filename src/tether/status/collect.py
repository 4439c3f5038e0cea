"""Reading the ``tether.status`` group: the latest snapshot of each process, forgotten once it is stale.

``Collector`` is sans-I/O (the admin page's consumer feeds it the snapshots it receives); ``gather`` is what
``manage.py tether_status`` does: join the group on a channel of its own, listen for a while, leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from tether import status
from tether.layers.base import BaseChannelLayer
from tether.status.snapshot import Snapshot

__all__ = ["Collector", "gather"]

#: A process is forgotten when its latest snapshot is older than this many of its intervals (it stopped, or its
#: snapshots are not getting through).
STALE_AFTER_INTERVALS = 3


class Collector:
    """The latest snapshot of each process, by process name."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._latest: dict[str, tuple[float, Snapshot]] = {}

    def add(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the latest of its process (one without a process name is ignored)."""
        name = snapshot.get("process")
        if isinstance(name, str):
            self._latest[name] = (self._clock(), snapshot)

    def current(self) -> list[Snapshot]:
        """The snapshots of the processes heard from recently enough, after forgetting the others."""
        now = self._clock()
        for name, (received, snapshot) in list(self._latest.items()):
            interval = snapshot.get("interval", 1.0)
            if not isinstance(interval, (int, float)) or now - received > STALE_AFTER_INTERVALS * float(interval):
                del self._latest[name]
        return [snapshot for _, snapshot in self._latest.values()]


async def gather(layer: BaseChannelLayer, seconds: float) -> list[Snapshot]:
    """Listen to the ``tether.status`` group of ``layer`` for ``seconds``; the latest snapshot of each process heard
    from. Leaves the group on the way out, whatever happens."""
    collector = Collector()
    channel = await layer.new_channel("tether.status.")
    await layer.group_add(status.GROUP, channel)
    try:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                message = await asyncio.wait_for(layer.receive(channel), left)
                if message.get("type") == "tether.status" and isinstance(message.get("snapshot"), dict):
                    collector.add(message["snapshot"])
    finally:
        await layer.group_discard(status.GROUP, channel)
    return collector.current()
