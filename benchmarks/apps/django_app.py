"""One Django ASGI application, served by either stack: the consumers are the same code under ``tether`` or
``channels`` imports (``BENCH_STACK``), so the benchmark compares the frameworks, not two programs.

Routes: ``/ws/echo/`` sends every frame back; ``/ws/room/<room>/`` joins a group and broadcasts what a client sends
to every member; HTTP ``/stats`` reports what the channel layer holds (for leftover-state checks after churn),
``/heap`` where memory goes (``benchmarks/apps/heap.py``).
"""

import importlib
import json
import os

import django

from benchmarks.apps.heap import heap  # first: it starts tracemalloc when asked to

django.setup()

from django.urls import path  # noqa: E402

STACK = os.environ.get("BENCH_STACK", "tether")
websocket = importlib.import_module(f"{STACK}.generic.websocket")
routing = importlib.import_module(f"{STACK}.routing")
layers = importlib.import_module(f"{STACK}.layers")


class EchoConsumer(websocket.AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class RoomConsumer(websocket.AsyncWebsocketConsumer):
    async def connect(self):
        self.room = "room." + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(self.room, {"type": "room.message", "text": text_data})

    async def room_message(self, event):
        await self.send(text_data=event["text"])


def layer_state() -> dict:
    """What the process's default layer holds now: tether's ``stats()``, or the sizes of Channels' in-memory maps."""
    layer = layers.get_channel_layer()
    if layer is None:
        return {"layer": None}
    state: dict = {"layer": type(layer).__module__ + "." + type(layer).__name__}
    if hasattr(layer, "stats"):
        state.update(layer.stats())
    if STACK == "channels" and hasattr(layer, "channels"):
        state["channels"] = len(layer.channels)
        state["groups"] = len(layer.groups)
    return state


async def stats_app(scope, receive, send):
    """HTTP: ``/stats`` answers the layer state as JSON; anything else is a 404."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/stats":
        status, body = 200, json.dumps(layer_state()).encode()
    elif scope["path"] == "/heap":
        status, body = 200, json.dumps(heap(scope["query_string"].decode())).encode()
    else:
        status, body = 404, b"not found"
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


application = routing.ProtocolTypeRouter(
    {
        "http": stats_app,
        "websocket": routing.URLRouter(
            [
                path("ws/echo/", EchoConsumer.as_asgi()),
                path("ws/room/<slug:room>/", RoomConsumer.as_asgi()),
            ]
        ),
    }
)
