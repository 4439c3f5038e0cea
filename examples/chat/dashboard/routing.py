"""The dashboard's WebSocket route and its worker channel (mounted in ``chatsite/asgi.py``)."""

from __future__ import annotations

from django.urls import path

from dashboard.channels import DASHBOARD_CHANNEL
from dashboard.consumers import DashboardConsumer
from dashboard.worker import DashboardWorker

__all__ = ["channel_routes", "websocket_urlpatterns"]

websocket_urlpatterns = [path("ws/dashboard/", DashboardConsumer.as_asgi())]

#: For ``ChannelNameRouter``: ``python manage.py runworker dashboard-ticker`` serves these.
channel_routes = {DASHBOARD_CHANNEL: DashboardWorker.as_asgi()}
