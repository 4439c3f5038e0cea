"""The admin page's WebSocket: staff only, it pushes the summary of every process about once per interval.

Route it behind ``AuthMiddlewareStack`` (``tether.status.routing``): the consumer refuses the handshake (the client
sees HTTP 403) unless ``scope["user"]`` is an active staff member, the test Django's admin applies to its pages.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from tether import status
from tether.generic.websocket import AsyncJsonWebsocketConsumer
from tether.status.collect import Collector
from tether.status.snapshot import aggregate

__all__ = ["StatusConsumer", "is_staff"]


def is_staff(user: Any) -> bool:
    """Whether ``user`` may see the status: active and staff, as ``admin.site.has_permission`` asks."""
    return bool(user is not None and getattr(user, "is_active", False) and getattr(user, "is_staff", False))


class StatusConsumer(AsyncJsonWebsocketConsumer):
    """Joins the ``tether.status`` group, keeps the latest snapshot of each process, and sends the page
    ``{"type": "status", "summary": ...}`` at most once per snapshot interval (several processes publishing do not
    multiply the pushes). It ignores what the page sends."""

    async def connect(self) -> None:
        if not is_staff(self.scope.get("user")):
            await self.close()
            return
        if self.channel_layer is None:
            raise ImproperlyConfigured("The tether status page needs a channel layer: set CHANNEL_LAYERS.")
        self.collector = Collector()
        self.pushed_at = 0.0
        self.push_every = 0.9 * status.interval()
        await self.channel_layer.group_add(status.GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "collector") and self.channel_layer is not None:
            await self.channel_layer.group_discard(status.GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The page has nothing to say; anything it sends is ignored."""

    async def tether_status(self, event: dict[str, Any]) -> None:
        """A process's snapshot: keep it, and push the summary if the last push is an interval old."""
        snapshot = event.get("snapshot")
        if isinstance(snapshot, dict):
            self.collector.add(snapshot)
        now = time.monotonic()
        if now - self.pushed_at >= self.push_every:
            self.pushed_at = now
            await self.send_json({"type": "status", "summary": aggregate(self.collector.current())})
