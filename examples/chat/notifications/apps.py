"""The notifications app: tells users, on whatever page they have open, that someone mentioned them."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["NotificationsConfig"]


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from notifications import signals  # noqa: F401  (connects the post_save receiver)
