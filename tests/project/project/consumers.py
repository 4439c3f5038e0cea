"""The test project's consumers: a WebSocket echo, a worker that answers jobs on the ``jobs`` channel, and a room
with presence."""

import asyncio
from urllib.parse import parse_qs

from tether.consumer import AsyncConsumer
from tether.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from tether.presence import get_presence
from tether.presence.consumer import AsyncPresenceConsumerMixin


class EchoConsumer(AsyncWebsocketConsumer):
    """Sends every frame back as it came."""

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class StallConsumer(AsyncWebsocketConsumer):
    """Joins the group named in its URL, and blocks on the first group event it gets (until the client leaves), so
    the events after it fill its channel: a drop the metrics must show."""

    async def connect(self):
        self.groups = [self.scope["url_route"]["kwargs"]["group"]]
        await self.channel_layer.group_add(self.groups[0], self.channel_name)
        await self.accept()

    async def stall_event(self, message):
        await asyncio.Event().wait()


class ListenConsumer(AsyncWebsocketConsumer):
    """Joins the group named in its URL and sends each ``news`` event's text to its client."""

    async def connect(self):
        self.groups = [self.scope["url_route"]["kwargs"]["group"]]
        await self.channel_layer.group_add(self.groups[0], self.channel_name)
        await self.accept()

    async def news(self, message):
        await self.send(text_data=message["text"])


class JobWorker(AsyncConsumer):
    """Answers each ``job.run`` message on the channel named in its ``reply_to``, saying which instance ran it; a job
    with ``seconds`` says it started, then takes that long."""

    async def job_run(self, message):
        if "seconds" in message:
            await self.channel_layer.send(message["reply_to"], {"type": "job.started", "number": message["number"]})
            await asyncio.sleep(message["seconds"])
        await self.channel_layer.send(
            message["reply_to"], {"type": "job.done", "number": message["number"], "instance": id(self)}
        )


class PresenceRoomConsumer(AsyncPresenceConsumerMixin, AsyncJsonWebsocketConsumer):
    """Present in the room named in its URL as the ``user`` of its query string; forwards the room's presence events
    and answers ``{"who": true}`` with the room's members (user -> their connections' metadata)."""

    def get_presence_groups(self):
        return ["room." + self.scope["url_route"]["kwargs"]["room"]]

    def get_presence_user(self):
        return parse_qs(self.scope["query_string"].decode())["user"][0]

    def get_presence_meta(self):
        return {"server": self.scope["server"][1]}

    async def connect(self):
        await self.accept()
        await self.send_json({"channel": self.channel_name})

    async def receive_json(self, content, **kwargs):
        members = await get_presence(self.channel_layer).members(self.get_presence_groups()[0])
        await self.send_json({"who": {m.user: [c.meta for c in m.connections] for m in members}})

    async def presence_join(self, event):
        await self.send_json(event)

    async def presence_leave(self, event):
        await self.send_json(event)
