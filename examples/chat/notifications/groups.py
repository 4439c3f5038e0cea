"""The group each user's open pages listen on for notifications."""

from __future__ import annotations

__all__ = ["notification_group"]


def notification_group(user_id: int | str) -> str:
    """The name of the group that every connection of the user with primary key ``user_id`` joins."""
    return f"notifications.user.{user_id}"
