"""The chat consumer: one per browser connection, carrying rooms' messages and the user's notifications.

It is routed twice (see ``chat/routing.py``):

- ``chat/connect/``: a page's general connection. It receives the user's notifications and joins rooms on request,
  so one connection serves a page whatever it shows.
- ``ws/chat/<room>/``: the same, with that room joined from the start (the tutorial's shape).

The browser speaks JSON objects with a ``type``:

========================================  =====================================================================
browser sends                             server answers
========================================  =====================================================================
``{"type": "join", "room": "general"}``   ``{"type": "joined", "room", "topic", "history": [message, ...]}``
``{"type": "leave", "room": "general"}``  ``{"type": "left", "room"}``
``{"type": "post", "room", "text"}``      every member of the room, the sender included, gets the ``message``
========================================  =====================================================================

A message is ``{"type": "message", "id", "room", "author", "text", "created"}``; a notification is
``{"type": "notification", ...}``. A request that cannot be served gets ``{"type": "error", "code", "message"}``
and the connection stays open. Guests (not logged in) may join and read but not post.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from django.contrib.auth.models import AnonymousUser

from chat.models import MAX_MESSAGE_LENGTH, ROOM_NAME_PATTERN, Room
from chat.presence import PresenceMixin
from chat.store import load_history, lookup_room, post_message
from notifications.consumers import NotificationsMixin
from tether.generic.websocket import AsyncJsonWebsocketConsumer

__all__ = ["NO_SUCH_ROOM", "ChatConsumer", "room_group"]

#: Close code when the room named in a ``ws/chat/<room>/`` URL does not exist.
NO_SUCH_ROOM = 4404

_ROOM_NAME = re.compile(f"^{ROOM_NAME_PATTERN}$")


def room_group(room: str) -> str:
    """The channel layer group of the room called ``room``."""
    return f"chat.room.{room}"


class ChatConsumer(PresenceMixin, NotificationsMixin, AsyncJsonWebsocketConsumer):
    """Chat rooms and notifications over one WebSocket connection (protocol in the module docstring)."""

    #: Most rooms one connection may have joined at once.
    max_rooms: ClassVar[int] = 20
    #: The requests a browser may send; ``{"type": "join"}`` is handled by ``request_join``, and so on.
    request_types: ClassVar[frozenset[str]] = frozenset({"join", "leave", "post"})

    async def connect(self) -> None:
        self.user = self.scope.get("user") or AnonymousUser()
        self.rooms: set[str] = set()
        await self.join_presence()
        await self.join_notifications()
        await self.accept()
        room = self.scope["url_route"]["kwargs"].get("room")
        if room is not None and not await self.join_room(room):
            await self.close(code=NO_SUCH_ROOM, reason="No such room")

    async def disconnect(self, code: int) -> None:
        for room in getattr(self, "rooms", ()):
            await self.channel_layer.group_discard(room_group(room), self.channel_name)
        await self.leave_presence()
        await self.leave_notifications()

    # Requests from the browser.

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        request_type = content.get("type") if isinstance(content, dict) else None
        if request_type not in self.request_types:
            await self.send_error(
                "bad_request",
                'Send a JSON object whose "type" is "join", "leave" or "post".',
                request_type if isinstance(request_type, str) else None,
            )
            return
        await getattr(self, f"request_{request_type}")(content)

    async def request_join(self, content: dict[str, Any]) -> None:
        await self.join_room(content.get("room"))

    async def request_leave(self, content: dict[str, Any]) -> None:
        room = content.get("room")
        if room not in self.rooms:
            await self.send_error("not_joined", f"You have not joined the room {room!r}.", "leave")
            return
        self.rooms.discard(room)
        await self.channel_layer.group_discard(room_group(room), self.channel_name)
        await self.send_json({"type": "left", "room": room})

    async def request_post(self, content: dict[str, Any]) -> None:
        if not self.user.is_authenticated:
            await self.send_error("login_required", "Log in to post messages: guests can read but not write.", "post")
            return
        room = content.get("room", self.scope["url_route"]["kwargs"].get("room"))
        text = content.get("text")
        if room not in self.rooms:
            await self.send_error("not_joined", f"Join the room {room!r} before posting to it.", "post")
            return
        if not isinstance(text, str) or not text.strip():
            await self.send_error("empty_message", "A message needs some text.", "post")
            return
        if len(text) > MAX_MESSAGE_LENGTH:
            await self.send_error(
                "message_too_long", f"A message holds at most {MAX_MESSAGE_LENGTH} characters, not {len(text)}.", "post"
            )
            return
        try:
            message = await post_message(room, self.user, text.strip())
        except Room.DoesNotExist:
            await self.send_error("no_such_room", f"The room {room!r} no longer exists.", "post")
            return
        await self.channel_layer.group_send(room_group(room), {"type": "chat.message", "message": message})

    async def join_room(self, room: Any) -> bool:
        """Join ``room`` and send its history; on failure send an error and return False."""
        if not isinstance(room, str) or not _ROOM_NAME.match(room):
            await self.send_error("bad_room_name", "A room name is 1 to 50 letters, digits, '-' or '_'.", "join")
            return False
        if room not in self.rooms and len(self.rooms) >= self.max_rooms:
            await self.send_error("too_many_rooms", f"Leave a room first: at most {self.max_rooms} at once.", "join")
            return False
        found = await lookup_room(room)
        if found is None:
            await self.send_error("no_such_room", f"There is no room called {room!r}.", "join")
            return False
        # Join before reading the history, so nothing posted in between is missed (the page drops duplicates).
        await self.channel_layer.group_add(room_group(room), self.channel_name)
        self.rooms.add(room)
        history = await load_history(found)
        await self.send_json({"type": "joined", "room": room, "topic": found.topic, "history": history})
        return True

    async def send_error(self, code: str, message: str, request: str | None = None) -> None:
        """Tell the browser that its request could not be served; the connection stays open."""
        await self.send_json({"type": "error", "code": code, "message": message, "request": request})

    # Events from the channel layer.

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A message posted in one of this connection's rooms."""
        await self.send_json(event["message"])
