"""The dashboard's ticker: a consumer of the ``dashboard-ticker`` worker channel.

Each tick it reads who is where from tether's presence (``chat.presence.presence_counts``), counts messages per
minute in the database, and pushes a snapshot to every open dashboard (``dashboard.update`` to the dashboard group).
It starts ticking on the first ``dashboard.watch`` and stops by itself when no dashboard has asked for ``idle_after``
seconds, so an unwatched dashboard costs nothing.

It is served by ``python manage.py runworker dashboard-ticker`` with the Redis layer, and by a task inside the web
server with the in-memory layer (see ``dashboard/inprocess.py``); the code is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, ClassVar

from django.conf import settings
from django.db import DatabaseError

from chat.presence import presence_counts
from dashboard.channels import DASHBOARD_GROUP
from dashboard.stats import build_snapshot, load_room_names
from tether.consumer import AsyncConsumer
from tether.exceptions import ChannelFull, LayerUnavailable
from tether.types import Message, Receive, Scope, Send

__all__ = ["DashboardWorker"]

logger = logging.getLogger("dashboard.worker")


class DashboardWorker(AsyncConsumer):
    """Pushes a dashboard snapshot every ``DASHBOARD_TICK_SECONDS`` while dashboards are watching."""

    #: Stop ticking when no dashboard has sent ``dashboard.watch`` for this many seconds.
    idle_after: ClassVar[float] = 60.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.ticker: asyncio.Task[None] | None = None
        self.latest: dict[str, Any] | None = None
        self.last_watch = time.monotonic()
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.ticker is not None:
                self.ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.ticker

    async def dashboard_watch(self, message: Message) -> None:
        """A dashboard is open: tick (start if needed), and send it the latest snapshot at once."""
        self.last_watch = time.monotonic()
        if self.ticker is None or self.ticker.done():
            logger.info("A dashboard is watching: ticking every %ss.", settings.DASHBOARD_TICK_SECONDS)
            self.ticker = asyncio.create_task(self.tick_while_watched())
        reply_to = message.get("reply_to")
        if self.latest is not None and isinstance(reply_to, str):
            with contextlib.suppress(ChannelFull):
                await self.channel_layer.send(reply_to, {"type": "dashboard.update", "snapshot": self.latest})

    async def tick_while_watched(self) -> None:
        """Tick until no dashboard has watched for ``idle_after`` seconds; the watch that started it gets the first."""
        interval = settings.DASHBOARD_TICK_SECONDS
        while True:
            try:
                await self.tick(interval)
            except (LayerUnavailable, DatabaseError) as error:
                logger.warning("Dashboard tick failed, trying again in %ss: %s", interval, error)
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_watch >= self.idle_after:
                break
        # Counted a minute ago or more: a dashboard that comes back waits for a fresh count rather than see old numbers.
        self.latest = None
        logger.info("No dashboard watched for %ss: ticker stopped.", self.idle_after)

    async def tick(self, interval: float) -> None:
        """Count who is where, and push a snapshot to every dashboard."""
        presence = await presence_counts(self.channel_layer, await load_room_names())
        self.latest = await build_snapshot(presence, interval)
        await self.channel_layer.group_send(DASHBOARD_GROUP, {"type": "dashboard.update", "snapshot": self.latest})
