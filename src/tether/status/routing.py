"""The admin page's WebSocket route, for the project's ``URLRouter`` (behind ``AuthMiddlewareStack``)."""

from __future__ import annotations

from django.urls import path

from tether.status.consumer import StatusConsumer

__all__ = ["PATH", "websocket_urlpatterns"]

#: Where the page connects (it reads it from the template, so a project may mount the route elsewhere and say so
#: in ``TETHER_STATUS_WEBSOCKET_PATH``).
PATH = "ws/tether/status/"

websocket_urlpatterns = [path(PATH, StatusConsumer.as_asgi(), name="tether-status")]  # type: ignore[arg-type]
