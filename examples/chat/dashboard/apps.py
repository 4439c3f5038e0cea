"""The dashboard app: a live page of messages per minute and connected users per room."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["DashboardConfig"]


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"
