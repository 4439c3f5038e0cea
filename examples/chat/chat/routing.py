"""WebSocket routes of the chat app (mounted in ``chatsite/asgi.py``)."""

from __future__ import annotations

from django.urls import path

from chat.consumers import ChatConsumer

__all__ = ["websocket_urlpatterns"]

#: Every page's connection: its rooms' streams, who is in them, and the user's notifications.
websocket_urlpatterns = [path("chat/connect/", ChatConsumer.as_asgi())]
