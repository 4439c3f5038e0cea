"""The task that publishes this process's snapshot to the ``tether.status`` group, once per interval.

One publisher per process (the metrics' counts are per process, so two would report them twice): the first
connection the process serves starts it in its event loop (``publisher_for_running_loop``), and it is kept there.
``Publisher.stop()`` cancels and awaits it; at shutdown ``asyncio.run`` cancels it like any pending task. If its loop
closes, the next connection served in another loop starts a new one.

Its cost is per interval, never per message: it reads the counts (one entry per consumer class), each built layer's
``stats()`` and ``group_sizes()`` (a dict of this process's groups), makes one health round trip per layer (a send
and a receive on a channel of its own, as readiness does), and sends one ``group_send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time

from tether import DEFAULT_CHANNEL_LAYER, loop_lag, metrics, status
from tether.health import check_layer
from tether.layers.manager import channel_layers
from tether.ratelimit import counters as rate_limit_counters
from tether.status.snapshot import Snapshot, consumer_counts, drop_counts, rates, top_groups

__all__ = ["Publisher", "process_name", "publisher_for_running_loop"]

logger = logging.getLogger("tether.status")

_publisher: Publisher | None = None
_lock = threading.Lock()


def process_name() -> str:
    """How this process is named in the status: ``<host>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Publisher:
    """Publishes a snapshot every ``interval`` seconds from a task of ``loop`` (created at once)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.interval = interval
        #: The counts of the previous snapshot and when they were read; none before the first (no rate yet).
        self._previous: dict[str, dict[str, int]] | None = None
        self._previous_at = time.monotonic()
        self._failing = False
        self._task: asyncio.Task[None] | None = loop.create_task(self._run(), name="tether-status-publisher")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.publish()
            except Exception:
                if not self._failing:  # logged once per run of failures, not once a second
                    logger.exception("Publishing the status snapshot failed; retrying every %s s.", self.interval)
                self._failing = True
            else:
                self._failing = False
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def snapshot(self) -> Snapshot:
        """This process's snapshot now (rates since the previous one)."""
        observer = metrics.observer
        counts = consumer_counts(observer.tally) if observer is not None else {}
        now = time.monotonic()
        layer_stats: dict[str, dict[str, int]] = {}
        sizes: dict[str, int] = {}
        for alias, layer in list(channel_layers.backends.items()):
            stats = getattr(layer, "stats", None)
            if stats is not None:
                layer_stats[alias] = stats()
            group_sizes = getattr(layer, "group_sizes", None)
            if group_sizes is not None:
                for group, size in group_sizes().items():
                    if group != status.GROUP:
                        sizes[group] = sizes.get(group, 0) + size
        health = {alias: await check_layer(alias, min(self.interval, 1.0)) for alias in list(channel_layers.backends)}
        snapshot: Snapshot = {
            "process": process_name(),
            "at": time.time(),
            "interval": self.interval,
            "open": sum(entry["open"] for entry in counts.values()),
            "consumers": counts,
            "rates": rates(counts, self._previous, now - self._previous_at) if self._previous is not None else {},
            "drops": drop_counts(layer_stats, rate_limit_counters()),
            "groups": top_groups(sizes),
            "layers": health,
            "loop_lag": round(loop_lag.probe_for_running_loop().recent_max(), 4),
        }
        self._previous, self._previous_at = counts, now
        return snapshot

    async def publish(self) -> None:
        """Send the snapshot to the ``tether.status`` group of the default layer."""
        snapshot = await self.snapshot()
        layer = channel_layers[DEFAULT_CHANNEL_LAYER]
        await layer.group_send(status.GROUP, {"type": "tether.status", "snapshot": snapshot})

    async def stop(self) -> None:
        """Cancel the task and wait for it."""
        global _publisher
        task, self._task = self._task, None
        with _lock:
            if _publisher is self:
                _publisher = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def publisher_for_running_loop() -> Publisher:
    """The process's publisher, started in the running loop if there is none running."""
    global _publisher
    with _lock:
        if _publisher is None or not _publisher.running:
            _publisher = Publisher(asyncio.get_running_loop(), status.interval())
        return _publisher
