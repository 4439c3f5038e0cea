"""The application that tests/test_drain.py serves in subprocesses (uvicorn and runserver), with its settings.

``/ws/steady/`` echoes text frames; a frame ``work:<seconds>`` starts a handler that works that long, then sends
``done``, so a test can prove that the drain waits for it. Each connection's first frame is ``pid:<the server
process's pid>``, so clients can tell which process they reconnected to.
"""

from __future__ import annotations

import asyncio
import os

import django

django.setup()

from django.urls import path  # noqa: E402

from tether.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from tether.routing import ProtocolTypeRouter, URLRouter  # noqa: E402


class Steady(AsyncWebsocketConsumer):
    groups = ["everyone"]  # uses the layer, so that closing it at shutdown is closing something in use

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=f"pid:{os.getpid()}")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None and text_data.startswith("work:"):
            await asyncio.sleep(float(text_data.removeprefix("work:")))
            await self.send(text_data="done")
            return
        await self.send(text_data=text_data, bytes_data=bytes_data)


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/steady/", Steady.as_asgi())])})
