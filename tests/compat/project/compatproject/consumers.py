"""Consumers written against Channels and its plug-ins: every import below names channels, none names tether.

``ApiConsumer`` is a djangochannelsrestframework ``AsyncAPIConsumer`` with actions; ``NoteConsumer`` a generic
consumer over ``Note`` whose model observer broadcasts saves through the channel layer; ``demultiplexer`` is
channelsmultiplexer's demultiplexer with an echo stream and a room stream that fans out through a layer group.
"""

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channelsmultiplexer import AsyncJsonWebsocketDemultiplexer
from djangochannelsrestframework.consumers import AsyncAPIConsumer
from djangochannelsrestframework.decorators import action
from djangochannelsrestframework.generics import GenericAsyncAPIConsumer
from djangochannelsrestframework.mixins import CreateModelMixin
from djangochannelsrestframework.observer import model_observer
from rest_framework import serializers

from compatproject.models import Note

ROOM = "compat-room"


class ApiConsumer(AsyncAPIConsumer):
    @action()
    async def echo(self, text, **kwargs):
        return {"echo": text}, 200

    @action()
    async def where(self, **kwargs):
        """Which classes serve this connection, as the server process sees them."""
        layer = get_channel_layer()
        return {
            "layer": f"{type(layer).__module__}.{type(layer).__name__}",
            "base": AsyncJsonWebsocketConsumer.__module__,
        }, 200


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "text"]


class NoteConsumer(CreateModelMixin, GenericAsyncAPIConsumer):
    queryset = Note.objects.all()
    serializer_class = NoteSerializer

    @model_observer(Note)
    async def note_activity(self, message, observer=None, subscribing_request_ids=(), **kwargs):
        await self.send_json({"activity": message, "request_ids": list(subscribing_request_ids)})

    @note_activity.serializer
    def note_activity(self, instance, action, **kwargs):
        return {"action": action.value, "text": instance.text}

    @action()
    async def subscribe(self, request_id, **kwargs):
        await self.note_activity.subscribe(request_id=request_id)
        return {"subscribed": True}, 200


class EchoStream(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"echo": content})


class RoomStream(AsyncJsonWebsocketConsumer):
    """Joins a layer group, says so (the client's signal that it will hear the room), and relays what it hears."""

    async def connect(self):
        await self.channel_layer.group_add(ROOM, self.channel_name)
        await self.accept()
        await self.send_json({"joined": ROOM})

    async def disconnect(self, code):
        await self.channel_layer.group_discard(ROOM, self.channel_name)

    async def receive_json(self, content, **kwargs):
        await self.channel_layer.group_send(ROOM, {"type": "room.message", "text": content["text"]})

    async def room_message(self, event):
        await self.send_json({"text": event["text"]})


demultiplexer = AsyncJsonWebsocketDemultiplexer.as_asgi(echo=EchoStream.as_asgi(), room=RoomStream.as_asgi())
