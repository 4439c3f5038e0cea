"""Presence for WebSocket consumers, declared like ``groups``: list the groups, and the connection is present in them
from its ``accept()`` (joined just before the accept is sent) to its disconnect, with no code.

::

    class RoomConsumer(AsyncPresenceConsumerMixin, AsyncJsonWebsocketConsumer):
        presence_groups = ["lobby"]

        async def presence_join(self, event):  # {"type": "presence.join", "group": ..., "members": [...]}
            await self.send_json(event)

The user is the scope's authenticated user (its primary key; an anonymous connection is a person of its own) and the
metadata its username; override ``get_presence_groups``, ``get_presence_user`` and ``get_presence_meta`` to choose
(for example a room from the URL). ``presence_join`` / ``presence_leave`` do nothing unless overridden; with
``presence_listen = False`` the connection is present without receiving the events.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from asgiref.sync import async_to_sync

from tether.exceptions import InvalidChannelLayerError
from tether.presence.base import Presence, get_presence
from tether.types import Message, Scope

__all__ = ["AsyncPresenceConsumerMixin", "PresenceConsumerMixin"]

logger = logging.getLogger("tether.presence")


class _PresenceDeclaration:
    """The attributes and defaults both mixins share."""

    #: The groups this connection is present in, from its accept to its disconnect.
    presence_groups: ClassVar[list[str] | None] = None
    #: Whether the connection receives its groups' ``presence.join`` / ``presence.leave`` events.
    presence_listen: ClassVar[bool] = True

    scope: Scope
    channel_name: str
    channel_layer: Any
    channel_layer_alias: str

    def get_presence_groups(self) -> list[str]:
        """The groups to be present in (``presence_groups`` unless overridden)."""
        return list(self.presence_groups or [])

    def get_presence_user(self) -> str | int | None:
        """Who this connection is: the authenticated user's primary key; ``None`` (anonymous: the connection is a
        person of its own) otherwise."""
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            pk: str | int = user.pk
            return pk
        return None

    def get_presence_meta(self) -> dict[str, Any]:
        """What others see of this connection: the authenticated user's username, or nothing."""
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return {"username": user.get_username()}
        return {}

    #: The groups this connection joined (to leave on disconnect); None before its accept.
    _presence_joined: list[str] | None = None

    async def _join_presence(self) -> None:
        """Join the presence groups, once (the consumer's accept calls it). A disconnect leaves whatever was joined,
        even when joining failed halfway."""
        groups = self.get_presence_groups()
        if not groups or self._presence_joined is not None:
            return
        presence = self._presence()
        user, meta = self.get_presence_user(), self.get_presence_meta()
        self._presence_joined = []
        for group in groups:
            await presence.join(group, self.channel_name, user=user, meta=meta, listen=self.presence_listen)
            self._presence_joined.append(group)

    async def _leave_presence(self) -> None:
        """Leave the groups joined; a failure is logged and the other groups are still left (the process's
        heartbeat drops what could not be, should it die)."""
        joined, self._presence_joined = self._presence_joined, None
        if not joined:
            return
        presence = self._presence()
        for group in joined:
            try:
                await presence.leave(group, self.channel_name)
            except Exception:
                logger.exception("%s could not leave presence group %r", type(self).__name__, group)

    def _presence(self) -> Presence:
        if self.channel_layer is None:
            raise InvalidChannelLayerError(
                f"{type(self).__name__}.presence_groups is set but the channel layer {self.channel_layer_alias!r} is "
                "not configured; configure CHANNEL_LAYERS."
            )
        return get_presence(self.channel_layer)


class AsyncPresenceConsumerMixin(_PresenceDeclaration):
    """Presence for ``AsyncWebsocketConsumer`` and ``AsyncJsonWebsocketConsumer``: list it first among the bases."""

    async def accept(self, *args: Any, **kwargs: Any) -> None:
        """Join the presence groups, then accept the connection (the consumer's ``accept``): a client told it is
        connected is present already, and sees itself in the members."""
        await self._join_presence()
        await super().accept(*args, **kwargs)  # type: ignore[misc]

    async def websocket_disconnect(self, message: Message) -> None:
        """Leave the presence groups, then disconnect as the consumer does."""
        try:
            await self._leave_presence()
        finally:
            await super().websocket_disconnect(message)  # type: ignore[misc]

    async def presence_join(self, event: Message) -> None:
        """A batch of connections joined one of the groups (``event["members"]``); override to tell the client."""

    async def presence_leave(self, event: Message) -> None:
        """A batch of connections left one of the groups (``event["members"]``); override to tell the client."""


class PresenceConsumerMixin(_PresenceDeclaration):
    """Presence for ``WebsocketConsumer`` and ``JsonWebsocketConsumer``: list it first among the bases."""

    def accept(self, *args: Any, **kwargs: Any) -> None:
        """Join the presence groups, then accept the connection (the consumer's ``accept``): a client told it is
        connected is present already, and sees itself in the members."""
        async_to_sync(self._join_presence)()
        super().accept(*args, **kwargs)  # type: ignore[misc]

    def websocket_disconnect(self, message: Message) -> None:
        """Leave the presence groups, then disconnect as the consumer does."""
        try:
            async_to_sync(self._leave_presence)()
        finally:
            super().websocket_disconnect(message)  # type: ignore[misc]

    def presence_join(self, event: Message) -> None:
        """A batch of connections joined one of the groups (``event["members"]``); override to tell the client."""

    def presence_leave(self, event: Message) -> None:
        """A batch of connections left one of the groups (``event["members"]``); override to tell the client."""
