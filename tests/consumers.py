"""Consumers that the test project serves for real over uvicorn, and that tests drive through communicators."""

from __future__ import annotations

from django.urls import path

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
