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
and the connection stays open. Guests (not logged in) may join and read but not post; members may post at
``post_rate`` (a burst of five, then one a second), counted per user over all their connections by tether's rate
limiter (``tether.ratelimit.take``): in this process, or in every process when ``TETHER_RATE_LIMITS`` puts the
buckets in Redis.

Whatever a client sends, the consumer answers with one of these short errors, never with a traceback, and never
echoes what it could not use: an error names a room only once the name has passed the room-name rule (at most 50
letters, digits, '-' or '_'), so a hostile frame cannot make the server send back megabytes or markup. A frame
longer than ``MAX_FRAME_LENGTH`` is refused unread; JSON nested deeper than tether's ``max_json_depth`` closes the
connection with 1007, as tether's JSON consumers do.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from django.contrib.auth.models import AnonymousUser

from chat.models import MAX_MESSAGE_LENGTH, ROOM_NAME_PATTERN, Room
from chat.presence import PresenceMixin
from chat.store import load_history, lookup_room, post_message
from notifications.consumers import NotificationsMixin
from tether.generic.websocket import AsyncJsonWebsocketConsumer
from tether.ratelimit import take

__all__ = ["MAX_FRAME_LENGTH", "NO_SUCH_ROOM", "ChatConsumer", "room_group"]

#: Close code when the room named in a ``ws/chat/<room>/`` URL does not exist.
NO_SUCH_ROOM = 4404

#: Longest text frame read, in characters: a post of MAX_MESSAGE_LENGTH characters, each escaped as \uXXXX, fits.
MAX_FRAME_LENGTH = 8 * MAX_MESSAGE_LENGTH

_ROOM_NAME = re.compile(ROOM_NAME_PATTERN)
#: The error message of a request whose room is not a room name.
ROOM_NAME_RULE = "A room name is 1 to 50 letters, digits, '-' or '_'."


def valid_room_name(value: Any) -> str | None:
    """``value`` when it is a room name, else None. A full match: ``"lounge\n"`` is not ``"lounge"``."""
    return value if isinstance(value, str) and _ROOM_NAME.fullmatch(value) else None


def room_group(room: str) -> str:
    """The channel layer group of the room called ``room``."""
    return f"chat.room.{room}"


class ChatConsumer(PresenceMixin, NotificationsMixin, AsyncJsonWebsocketConsumer):
    """Chat rooms and notifications over one WebSocket connection (protocol in the module docstring)."""

    #: Most rooms one connection may have joined at once.
    max_rooms: ClassVar[int] = 20
    #: The requests a browser may send; ``{"type": "join"}`` is handled by ``request_join``, and so on.
    request_types: ClassVar[frozenset[str]] = frozenset({"join", "leave", "post"})
    #: How fast a user may post, over all their connections: five at once, then one a second (a tether rate).
    post_rate: ClassVar[str] = "5/5s"

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

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is not None and len(text_data) > MAX_FRAME_LENGTH:
            await self.send_error("too_large", f"A request holds at most {MAX_FRAME_LENGTH} characters.")
            return
        await super().receive(text_data, bytes_data, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        request_type = content.get("type") if isinstance(content, dict) else None
        if not isinstance(request_type, str) or request_type not in self.request_types:
            await self.send_error("bad_request", 'Send a JSON object whose "type" is "join", "leave" or "post".')
            return
        await getattr(self, f"request_{request_type}")(content)

    async def request_join(self, content: dict[str, Any]) -> None:
        await self.join_room(content.get("room"))

    async def request_leave(self, content: dict[str, Any]) -> None:
        room = valid_room_name(content.get("room"))
        if room is None:
            await self.send_error("bad_room_name", ROOM_NAME_RULE, "leave")
            return
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
        wait = await take("chat.post", self.user.pk, self.post_rate)
        if wait:
            message = f"You are posting too fast: wait {math.ceil(wait)} s and try again."
            await self.send_error("rate_limited", message, "post")
            return
        room = valid_room_name(content.get("room", self.scope["url_route"]["kwargs"].get("room")))
        text = content.get("text")
        if room is None:
            await self.send_error("bad_room_name", ROOM_NAME_RULE, "post")
            return
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
        room = valid_room_name(room)
        if room is None:
            await self.send_error("bad_room_name", ROOM_NAME_RULE, "join")
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
