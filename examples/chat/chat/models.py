"""Rooms and the messages posted in them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

__all__ = ["HISTORY_LENGTH", "MAX_MESSAGE_LENGTH", "ROOM_NAME_PATTERN", "Message", "Room"]

#: A room's name appears in URLs and in group names: letters, digits, '-' and '_'.
ROOM_NAME_PATTERN = r"[A-Za-z0-9_-]{1,50}"
#: Longest message accepted, in characters.
MAX_MESSAGE_LENGTH = 2000
#: How many earlier messages a browser receives when it joins a room.
HISTORY_LENGTH = 50


class Room(models.Model):
    """A chat room, named in its URL: ``/chat/<name>/``."""

    name = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(f"^{ROOM_NAME_PATTERN}$", "Use letters, digits, '-' and '_' only.")],
    )
    topic = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("chat:room", args=[self.name])


class Message(models.Model):
    """One message in a room, by a logged-in user."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages")
    text = models.TextField(max_length=MAX_MESSAGE_LENGTH)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.author} in {self.room}: {self.text[:40]}"

    def as_event(self) -> dict[str, Any]:
        """The message as the browser receives it (``{"type": "message", ...}``)."""
        return {
            "type": "message",
            "id": self.pk,
            "room": self.room.name,
            "author": self.author.get_username(),
            "text": self.text,
            "created": self.created.isoformat(),
        }
