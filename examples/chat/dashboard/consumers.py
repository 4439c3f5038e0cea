"""The dashboard page's connection: snapshots from the ticker, and the user's notifications."""

from __future__ import annotations

from typing import Any, ClassVar

from chat.presence import ONLINE_GROUP
from dashboard.channels import DASHBOARD_CHANNEL, DASHBOARD_GROUP
from dashboard.inprocess import ensure_worker
from notifications.consumers import NotificationsMixin
from tether.exceptions import ChannelFull
from tether.generic.websocket import AsyncJsonWebsocketConsumer
from tether.presence.consumer import AsyncPresenceConsumerMixin

__all__ = ["DashboardConsumer"]


class DashboardConsumer(AsyncPresenceConsumerMixin, NotificationsMixin, AsyncJsonWebsocketConsumer):
    """Joins the dashboard group and asks the ticker for updates; counts as online (in no room) on the dashboard.

    The page sends ``{"type": "watch"}`` now and then to keep the ticker going (it stops when nobody watches);
    the server sends ``{"type": "dashboard", ...}`` snapshots, and an ``error`` when the worker is not running.
    """

    groups: ClassVar[list[str]] = [DASHBOARD_GROUP]
    #: Present on the site (counted as online) from the accept to the disconnect, hearing nobody's arrivals.
    presence_groups: ClassVar[list[str]] = [ONLINE_GROUP]
    presence_listen: ClassVar[bool] = False

    async def connect(self) -> None:
        await self.join_notifications()
        await self.accept()
        await self.watch()

    async def disconnect(self, code: int) -> None:
        await self.leave_notifications()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "watch":
            await self.watch()
        else:
            await self.send_json(
                {"type": "error", "code": "bad_request", "message": 'The dashboard understands {"type": "watch"} only.'}
            )

    async def watch(self) -> None:
        """Ask the ticker to keep ticking and to send this page its latest snapshot."""
        ensure_worker()
        try:
            await self.channel_layer.send(DASHBOARD_CHANNEL, {"type": "dashboard.watch", "reply_to": self.channel_name})
        except ChannelFull:
            await self.send_json(
                {
                    "type": "error",
                    "code": "worker_not_running",
                    "message": f"The dashboard worker is not running: start `manage.py runworker {DASHBOARD_CHANNEL}`.",
                }
            )

    async def dashboard_update(self, event: dict[str, Any]) -> None:
        """A snapshot from the ticker."""
        await self.send_json(event["snapshot"])
