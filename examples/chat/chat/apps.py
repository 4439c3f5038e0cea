"""The chat app: rooms, their messages, and the consumer that carries them to browsers."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["ChatConfig"]


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"
    default_auto_field = "django.db.models.BigAutoField"
