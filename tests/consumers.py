"""Consumers that the test project serves for real over uvicorn, and that tests drive through communicators."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs

from django.urls import path

from tether.exceptions import DenyConnection
from tether.generic.http import AsyncHttpConsumer
from tether.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)


class EchoConsumer(AsyncWebsocketConsumer):
    """Sends every frame back as it came."""

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class SyncEchoConsumer(WebsocketConsumer):
    """The synchronous echo: runs in Django's thread-sensitive executor."""

    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data, bytes_data=bytes_data)


class RoomConsumer(AsyncJsonWebsocketConsumer):
    """Joins the group named in the URL; broadcasts what a client posts to everybody in the room."""

    async def connect(self):
        self.room = f"room.{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive_json(self, content):
        await self.channel_layer.group_send(self.room, {"type": "room.message", "content": content})

    async def room_message(self, event):
        await self.send_json(event["content"])


class SyncJsonEchoConsumer(JsonWebsocketConsumer):
    def receive_json(self, content):
        self.send_json({"echo": content})


websocket_urlpatterns = [
    path("ws/echo/", EchoConsumer.as_asgi()),
    path("ws/sync-echo/", SyncEchoConsumer.as_asgi()),
    path("ws/json-echo/", SyncJsonEchoConsumer.as_asgi()),
    path("ws/room/<slug:room>/", RoomConsumer.as_asgi()),
]


def query_params(scope) -> dict[str, str]:
    """The scope's query string as a dict of the last value of each name."""
    return {name: values[-1] for name, values in parse_qs(scope["query_string"].decode("latin-1")).items()}


class GatekeeperConsumer(AsyncWebsocketConsumer):
    """Lets in only ``?token=letmein``; picks ``tether.v2`` when the client offers it and adds a response header."""

    async def connect(self):
        if query_params(self.scope).get("token") != "letmein":
            raise DenyConnection()
        offered = self.scope["subprotocols"]
        await self.accept("tether.v2" if "tether.v2" in offered else None, headers=[("x-tether-gate", "open")])


class CloserConsumer(AsyncWebsocketConsumer):
    """A text frame ``"<code> <reason>"`` closes the connection with that code and reason."""

    async def receive(self, text_data=None, bytes_data=None):
        code, _, reason = text_data.partition(" ")
        await self.close(int(code), reason or None)


websocket_urlpatterns += [
    path("ws/gate/", GatekeeperConsumer.as_asgi()),
    path("ws/close/", CloserConsumer.as_asgi()),
]


def stream_group(scope) -> str:
    return f"stream.{scope['url_route']['kwargs']['stream']}"


class EventStreamConsumer(AsyncHttpConsumer):
    """Server-sent events: each ``stream.event`` sent to the stream's group is one event; ``stream.end`` finishes."""

    async def handle(self, body):
        self.group = stream_group(self.scope)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_headers(headers=[(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")])
        await self.send_body(b": subscribed\n\n", more_body=True)

    async def stream_event(self, event):
        await self.send_body(f"data: {event['data']}\n\n".encode(), more_body=True)

    async def stream_end(self, event):
        await self.send_body(b"event: end\ndata: \n\n")

    async def disconnect(self):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)


class LongPollConsumer(AsyncHttpConsumer):
    """Answers with the next ``stream.event`` of the stream, or 204 after ``?timeout=`` seconds (default 10)."""

    async def handle(self, body):
        self.group = stream_group(self.scope)
        await self.channel_layer.group_add(self.group, self.channel_name)
        timeout = float(query_params(self.scope).get("timeout", 10))
        self.timer = asyncio.get_running_loop().create_task(self.time_out(timeout))

    async def time_out(self, delay):
        await asyncio.sleep(delay)
        await self.channel_layer.send(self.channel_name, {"type": "poll.timeout"})

    async def stream_event(self, event):
        await self.send_response(200, event["data"].encode(), headers={"Content-Type": "text/plain"})

    async def stream_end(self, event):
        await self.send_response(204, b"")

    async def poll_timeout(self, event):
        await self.send_response(204, b"")

    async def disconnect(self):
        if hasattr(self, "timer"):
            self.timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.timer
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)


class PublishConsumer(AsyncHttpConsumer):
    """POST a body to send it as a ``stream.event`` to the stream; ``?end=1`` sends ``stream.end`` instead."""

    async def handle(self, body):
        if self.scope["method"] != "POST":
            await self.send_response(405, b"POST only", headers={"Allow": "POST"})
            return
        if query_params(self.scope).get("end"):
            message = {"type": "stream.end"}
        else:
            message = {"type": "stream.event", "data": body.decode()}
        await self.channel_layer.group_send(stream_group(self.scope), message)
        await self.send_response(202, b"published")


http_urlpatterns = [
    path("sse/<slug:stream>/", EventStreamConsumer.as_asgi()),
    path("poll/<slug:stream>/", LongPollConsumer.as_asgi()),
    path("publish/<slug:stream>/", PublishConsumer.as_asgi()),
]
