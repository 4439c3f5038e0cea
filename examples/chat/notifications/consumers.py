"""What a WebSocket consumer needs to deliver the logged-in user's notifications to the page."""

from __future__ import annotations

from typing import Any

from notifications.groups import notification_group

__all__ = ["NotificationsMixin"]


class NotificationsMixin:
    """Mix into an ``AsyncJsonWebsocketConsumer``: call ``join_notifications()`` in ``connect()`` and
    ``leave_notifications()`` in ``disconnect()``; notifications then reach the browser as
    ``{"type": "notification", ...}`` frames. Guests get none.
    """

    async def join_notifications(self) -> None:
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.notification_group = notification_group(user.pk)
            await self.channel_layer.group_add(self.notification_group, self.channel_name)

    async def leave_notifications(self) -> None:
        group = getattr(self, "notification_group", None)
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def notify_mention(self, event: dict[str, Any]) -> None:
        """Layer event ``notify.mention``: forward the notification to the browser."""
        await self.send_json(event["notification"])
