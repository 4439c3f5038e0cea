"""The test project's consumers: a WebSocket echo, and a worker that answers jobs on the ``jobs`` channel."""

import asyncio

from tether.consumer import AsyncConsumer
from tether.generic.websocket import AsyncWebsocketConsumer


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
