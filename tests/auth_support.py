"""Consumers, views and helpers shared by the session, auth and token-auth tests.

``ROOT_URLCONF = "tests.auth_support"`` (under ``override_settings``) serves the views below through Django's
``get_asgi_application()``, so tests can check that a WebSocket login is seen by a later HTTP request.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.test import Client
from django.urls import path

from tether.auth import login, logout, make_token
from tether.db import database_sync_to_async
from tether.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer

PASSWORD = "correct horse battery staple"


def create_user(username: str = "alice", password: str = PASSWORD, **extra: Any) -> Any:
    return get_user_model().objects.create_user(username=username, password=password, **extra)


def session_cookie_for(user: Any) -> str:
    """Log ``user`` in through Django's test client, with the configured session engine; return the cookie value."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def cookie_header(value: str, name: str | None = None) -> tuple[bytes, bytes]:
    return b"cookie", f"{name or settings.SESSION_COOKIE_NAME}={value}".encode("latin-1")


def fetch_json(url: str, cookie: str | None = None) -> Any:
    """GET ``url`` with the session cookie (blocking: call it through ``asyncio.to_thread``); the decoded JSON."""
    request = urllib.request.Request(url)
    if cookie is not None:
        request.add_header("Cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def scope_seen_by_inner(middleware_class: Any, scope: dict[str, Any]) -> dict[str, Any]:
    """Run ``middleware_class(inner)`` on ``scope``; return the scope ``inner`` received."""
    seen: dict[str, Any] = {}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    await middleware_class(inner)(scope, None, None)
    return seen


def describe_user(user: Any) -> dict[str, Any]:
    return {"authenticated": bool(user.is_authenticated), "username": user.get_username() or None}


def set_cookie_headers(headers: Any) -> list[str]:
    """The ``Set-Cookie`` values among ASGI ``(bytes, bytes)`` headers or a ``websockets`` Headers object."""
    if hasattr(headers, "get_all"):
        return list(headers.get_all("Set-Cookie"))
    return [value.decode("latin-1") for name, value in headers if name.lower() == b"set-cookie"]


class EmailBackend(ModelBackend):
    """A custom backend: authenticates by e-mail address instead of username."""

    def authenticate(self, request: Any, email: str | None = None, password: str | None = None, **kwargs: Any) -> Any:
        user = get_user_model()._default_manager.filter(email=email).first()
        if user is not None and user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None


class WhoAmIConsumer(AsyncJsonWebsocketConsumer):
    """Accepts and says who ``scope["user"]`` is, and which subprotocols the scope offers."""

    async def connect(self) -> None:
        await self.accept()
        await self.send_json({**describe_user(self.scope["user"]), "subprotocols": self.scope["subprotocols"]})


class AccountConsumer(AsyncJsonWebsocketConsumer):
    """Logs in and out on request: ``{"login": name, "password": pw}``, ``{"logout": true}``, ``{"whoami": true}``.

    With ``?login=<name>`` in the URL it logs that user in (password ``PASSWORD``) inside ``connect()``, saves the
    session and accepts, so the new session cookie rides on the handshake response.
    """

    async def connect(self) -> None:
        query = self.scope["query_string"].decode()
        if query.startswith("login="):
            await self.log_in(query.removeprefix("login="), PASSWORD)
            await self.scope["session"].asave()
        await self.accept()

    async def log_in(self, username: str, password: str) -> bool:
        user = await database_sync_to_async(authenticate)(username=username, password=password)
        if user is None:
            return False
        await login(self.scope, user)
        return True

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        session = self.scope["session"]
        if "login" in content:
            ok = await self.log_in(content["login"], content["password"])
            if content.get("save", True):
                await session.asave()
            await self.send_json({"logged_in": ok, "session_key": session.session_key})
        elif "logout" in content:
            await logout(self.scope)
            await self.send_json({"logged_out": True, "session_key": session.session_key})
        elif "whoami" in content:
            await self.send_json(describe_user(self.scope["user"]))


class SyncAccountConsumer(JsonWebsocketConsumer):
    """The synchronous twin: logs in with ``async_to_sync(login)`` and saves with ``session.save()``."""

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        user = authenticate(username=content["login"], password=content["password"])
        async_to_sync(login)(self.scope, user)
        self.scope["session"].save()
        self.send_json({**describe_user(self.scope["user"]), "session_key": self.scope["session"].session_key})


def whoami_view(request: Any) -> JsonResponse:
    return JsonResponse(describe_user(request.user))


def set_session_view(request: Any) -> HttpResponse:
    request.session["colour"] = request.GET.get("colour", "blue")
    return HttpResponse("stored")


@login_required
def websocket_token_view(request: Any) -> JsonResponse:
    """The view docs/token-auth.md shows: a short-lived token for the logged-in user, bound to their session."""
    return JsonResponse({"token": make_token(request.user, session=request.session, max_age=60)})


urlpatterns = [
    path("whoami/", whoami_view),
    path("websocket-token/", websocket_token_view),
    path("set-session/", set_session_view),
]
