"""The test project's consumers: a WebSocket echo, and a worker that answers jobs on the ``jobs`` channel."""

import asyncio

from tether.consumer import AsyncConsumer
from tether.generic.websocket import AsyncWebsocketConsumer


class EchoConsumer(AsyncWebsocketConsumer):
    """Sends every frame back as it came."""

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


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
