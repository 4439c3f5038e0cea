"""The chat consumer: one per page, carrying the rooms' streams, who is in them, and the user's notifications.

It speaks tether's stream protocol (``tether.streams.consumer.StreamConsumer``, docs/protocol.md), which the page's
tether.js speaks too. The room page (``chat/static/chat/room.js``):

- subscribes to ``chat.room.<room>`` with presence: the room's messages, each once and in order, including those
  posted while the page was disconnected or reloading (recovered from the stream's history), and who is in the room
  (one entry per user, however many tabs they have);
- subscribes to ``chat.typing.<room>``: who is typing, live only;
- makes requests: ``history`` (the room's last 50 messages, on first load and when the stream cannot be recovered),
  ``post`` (store a message and publish it to the room's stream) and ``typing`` (publish a typing notice).

A message is ``{"type": "message", "id", "room", "author", "text", "created"}``; a notification is a frame of its
own, ``{"type": "notification", ...}``. Every connection is present in ``chat.online`` (the dashboard counts it).

Guests (not logged in) may read but not post; members may post at ``post_rate`` (a burst of five, then one a
second), counted per user over all their connections by tether's rate limiter (``tether.ratelimit.take``): in this
process, or in every process when ``TETHER_RATE_LIMITS`` puts the buckets in Redis. A request that cannot be served
gets an error reply with a short code and message (never with a traceback, and never echoing what it could not use:
an error names a room only once the name has passed the room-name rule). A frame longer than ``MAX_FRAME_LENGTH`` is
refused unread; JSON nested deeper than tether's ``max_json_depth`` closes the connection with 1007.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from chat.models import MAX_MESSAGE_LENGTH, ROOM_NAME_PATTERN, Room
from chat.presence import ONLINE_GROUP
from chat.store import load_history, lookup_room, post_message
from chat.streams import room_of, room_stream, typing_stream
from notifications.consumers import NotificationsMixin
from tether.ratelimit import take
from tether.streams import get_streams
from tether.streams.consumer import RequestError, StreamConsumer

__all__ = ["MAX_FRAME_LENGTH", "ChatConsumer"]

#: Longest text frame read, in characters: a post of MAX_MESSAGE_LENGTH characters, each escaped as \uXXXX, fits.
MAX_FRAME_LENGTH = 8 * MAX_MESSAGE_LENGTH

_ROOM_NAME = re.compile(ROOM_NAME_PATTERN)
#: The error message of a request whose room is not a room name.
ROOM_NAME_RULE = "A room name is 1 to 50 letters, digits, '-' or '_'."


def valid_room_name(value: Any) -> str:
    """``value`` when it is a room name (a full match: ``"lounge\n"`` is not ``"lounge"``); else RequestError."""
    if isinstance(value, str) and _ROOM_NAME.fullmatch(value):
        return value
    raise RequestError("bad_room_name", ROOM_NAME_RULE)


async def existing_room(value: Any) -> Room:
    """The room named ``value``; RequestError when it is not a room name or there is no such room."""
    name = valid_room_name(value)
    room = await lookup_room(name)
    if room is None:
        raise RequestError("no_such_room", f"There is no room called {name!r}.")
    return room


class ChatConsumer(NotificationsMixin, StreamConsumer):
    """A page's connection: rooms' streams with presence, posting, typing, notifications (see the module docstring)."""

    #: Every connection is present in the site-wide group the dashboard counts, wherever its page is.
    presence_groups: ClassVar[list[str]] = [ONLINE_GROUP]
    #: ... without hearing every arrival on the site.
    presence_listen: ClassVar[bool] = False
    #: A room takes two streams (messages, typing): at most 20 rooms open on one connection.
    max_subscriptions: ClassVar[int] = 40
    #: How fast a user may post, over all their connections: five at once, then one a second (a tether rate).
    post_rate: ClassVar[str] = "5/5s"
    #: How often a user's typing notices go out: the page sends one every few seconds while the user types.
    typing_rate: ClassVar[str] = "2/2s"

    async def connect(self) -> None:
        await self.join_notifications()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.leave_notifications()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is not None and len(text_data) > MAX_FRAME_LENGTH:
            message = f"A frame holds at most {MAX_FRAME_LENGTH} characters."
            await self.send_json({"type": "reply", "id": None, "error": {"code": "too_large", "message": message}})
            return
        await super().receive(text_data, bytes_data, **kwargs)

    async def authorize(self, stream: str, *, presence: bool) -> bool:
        """Anyone, guests included, may read an existing room's streams and be present in them."""
        room = room_of(stream)
        if room is None:
            raise RequestError(
                "not_found", "There is no such stream: a room's are chat.room.<room> and chat.typing.<room>."
            )
        await existing_room(room)
        return True

    # Requests from the page.

    async def request_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """The room's topic and last messages, oldest first."""
        room = await existing_room(params.get("room"))
        return {"room": room.name, "topic": room.topic, "messages": await load_history(room)}

    async def request_post(self, params: dict[str, Any]) -> dict[str, Any]:
        """Store a message and publish it to the room's stream; the reply is its id and offset."""
        user = self.require_login("Log in to post messages: guests can read but not write.")
        wait = await take("chat.post", user.pk, self.post_rate)
        if wait:
            raise RequestError("rate_limited", f"You are posting too fast: wait {math.ceil(wait)} s and try again.")
        room = valid_room_name(params.get("room"))
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise RequestError("empty_message", "A message needs some text.")
        if len(text) > MAX_MESSAGE_LENGTH:
            raise RequestError(
                "message_too_long", f"A message holds at most {MAX_MESSAGE_LENGTH} characters, not {len(text)}."
            )
        try:
            message = await post_message(room, user, text.strip())
        except Room.DoesNotExist:
            raise RequestError("no_such_room", f"There is no room called {room!r}.") from None
        position = await get_streams(self.channel_layer).publish(room_stream(room), message)
        return {"id": message["id"], "offset": position.offset}

    async def request_typing(self, params: dict[str, Any]) -> dict[str, bool]:
        """Tell the room that this user is typing; ``sent`` is false when the user's notices come too fast."""
        user = self.require_login("Log in to write.")
        if await take("chat.typing", user.pk, self.typing_rate):
            return {"sent": False}
        room = await existing_room(params.get("room"))
        await get_streams(self.channel_layer).publish(typing_stream(room.name), {"user": user.get_username()})
        return {"sent": True}

    def require_login(self, why: str) -> Any:
        """The logged-in user; RequestError ``login_required`` (saying ``why``) for a guest."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise RequestError("login_required", why)
        return user
