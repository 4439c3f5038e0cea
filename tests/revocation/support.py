"""Consumers, views and the ASGI application the "sockets follow the login" tests serve, in threads and in processes.

``websocket_app`` is what ``tests/revocation/asgi.py`` serves in a uvicorn subprocess (settings
``tests.revocation.settings``: the suite's database and a Redis layer with a prefix of the test's own) and what the
in-process tests serve with the ``serve`` fixture.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import logout as django_logout
from django.http import HttpResponse
from django.urls import path

from tests.auth_support import describe_user
from tether.auth import AuthMiddlewareStack, TokenAuthMiddleware, carry_on_anonymous, logout
from tether.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from tether.routing import URLRouter

#: The close codes ``FollowedConsumer.disconnect`` was called with, in this process (the in-process tests read it).
disconnect_codes: list[int] = []


class FollowedConsumer(AsyncJsonWebsocketConsumer):
    """Says who the user is on connect and in answer to every frame; ``{"logout": true}`` logs out with tether."""

    async def connect(self) -> None:
        await self.accept()
        await self.send_json(describe_user(self.scope["user"]))

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("logout"):
            await logout(self.scope)
        await self.send_json(describe_user(self.scope["user"]))

    async def disconnect(self, code: int) -> None:
        disconnect_codes.append(code)


class SyncFollowedConsumer(JsonWebsocketConsumer):
    """The synchronous twin of ``FollowedConsumer`` (without the logout)."""

    def connect(self) -> None:
        self.accept()
        self.send_json(describe_user(self.scope["user"]))

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json(describe_user(self.scope["user"]))


class AnonymousAfterConsumer(FollowedConsumer):
    """Opts in to carry on as an anonymous user when the login ends, and says so to the client."""

    async def connect(self) -> None:
        followed = carry_on_anonymous(self)
        await self.accept()
        await self.send_json({**describe_user(self.scope["user"]), "followed": followed})

    async def auth_revoked(self, message: dict[str, Any]) -> None:
        await self.send_json({**describe_user(self.scope["user"]), "revoked": message["reason"]})


class SyncAnonymousAfterConsumer(SyncFollowedConsumer):
    """The synchronous twin of ``AnonymousAfterConsumer``."""

    def connect(self) -> None:
        carry_on_anonymous(self)
        super().connect()

    def auth_revoked(self, message: dict[str, Any]) -> None:
        self.send_json({**describe_user(self.scope["user"]), "revoked": message["reason"]})


websocket_routes = URLRouter(
    [
        path("ws/followed/", FollowedConsumer.as_asgi()),
        path("ws/sync/", SyncFollowedConsumer.as_asgi()),
        path("ws/anonymous-after/", AnonymousAfterConsumer.as_asgi()),
        path("ws/sync-anonymous-after/", SyncAnonymousAfterConsumer.as_asgi()),
    ]
)
#: Session cookie or token (subprotocol ``token.<token>``), as docs/token-auth.md shows them stacked.
websocket_app = AuthMiddlewareStack(TokenAuthMiddleware(websocket_routes))


def logout_view(request: Any) -> HttpResponse:
    """Django's own logout, as a project's logout view runs it."""
    django_logout(request)
    return HttpResponse("logged out")


urlpatterns = [path("logout/", logout_view)]
