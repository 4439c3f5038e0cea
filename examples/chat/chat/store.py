"""The database work of the chat consumer, as plain functions (sync, for views and tests) and awaitables.

The consumer runs on the event loop; each awaitable here runs its query in Django's database thread through
``database_sync_to_async``, which also closes stale connections around it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from chat.models import HISTORY_LENGTH, Message, Room
from tether.db import database_sync_to_async

__all__ = ["find_room", "history", "load_history", "lookup_room", "post_message", "save_message"]


def find_room(name: str) -> Room | None:
    """The room called ``name``, or None."""
    return Room.objects.filter(name=name).first()


def history(room: Room, limit: int = HISTORY_LENGTH) -> list[dict[str, Any]]:
    """The room's last ``limit`` messages as browser events, oldest first."""
    latest = Message.objects.filter(room=room).select_related("author", "room").order_by("-created", "-id")[:limit]
    return [message.as_event() for message in reversed(latest)]


def save_message(room_name: str, author: AbstractBaseUser, text: str) -> dict[str, Any]:
    """Store a message in the room called ``room_name`` and return it as a browser event.

    Saving sends Django's ``post_save`` signal, on which the notifications app tells mentioned users.
    Raises ``Room.DoesNotExist`` when the room has been deleted meanwhile.
    """
    room = Room.objects.get(name=room_name)
    message = Message.objects.create(room=room, author=author, text=text)
    return message.as_event()


lookup_room = database_sync_to_async(find_room)
load_history = database_sync_to_async(history)
post_message = database_sync_to_async(save_message)
