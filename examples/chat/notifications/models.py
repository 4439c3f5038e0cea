"""A stored record of each notification, so a user can find it again after the toast has gone."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

__all__ = ["Notification"]


class Notification(models.Model):
    """``recipient`` was mentioned in ``message``."""

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="notifications")
    created = models.DateTimeField(auto_now_add=True)
    read = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created"]
        constraints = [models.UniqueConstraint(fields=["recipient", "message"], name="one_notification_per_mention")]

    def __str__(self) -> str:
        return f"{self.recipient} mentioned by {self.message.author}"

    def as_event(self) -> dict[str, Any]:
        """The notification as the browser receives it (``{"type": "notification", ...}``)."""
        message = self.message
        return {
            "type": "notification",
            "kind": "mention",
            "id": self.pk,
            "from": message.author.get_username(),
            "room": message.room.name,
            "text": message.text[:200],
            "url": f"{message.room.get_absolute_url()}#message-{message.pk}",
        }
