"""A minimal client of the stream protocol for the tests: a ``websockets`` connection that numbers its calls, waits
for their replies, and keeps the other frames (messages, presence) in arrival order for the test to read."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import websockets

#: Seconds a test waits for any one frame: generous, for a loaded 2-core machine; never reached when things work.
WAIT = 20.0


class ProtocolClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        #: Frames received that were not the reply being waited for, in arrival order.
        self.frames: list[dict[str, Any]] = []

    async def send(self, frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def receive(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
        return frame

    async def call(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send ``frame`` with the next id; its reply (frames before it are kept in ``frames``)."""
        frame = {**frame, "id": next(self.ids)}
        await self.send(frame)
        return await self.reply_to(frame["id"])

    async def reply_to(self, id: Any) -> dict[str, Any]:
        while True:
            frame = await self.receive()
            if frame.get("type") == "reply" and frame.get("id") == id:
                return frame
            self.frames.append(frame)

    async def subscribe(self, stream: str, **fields: Any) -> dict[str, Any]:
        return await self.call({"type": "subscribe", "stream": stream, **fields})

    async def request(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.call({"type": "request", "method": method, "params": params})

    async def publish(self, stream: str, count: int = 1, first: int = 1) -> dict[str, Any]:
        """Publish ``{"n": first}`` ... through the server (the test app's ``publish`` request); the last position."""
        answer = await self.request("publish", stream=stream, count=count, first=first)
        assert "result" in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    async def next_of(self, kind: str) -> dict[str, Any]:
        """The first kept or next received frame of type ``kind`` (earlier frames of other types stay kept)."""
        for index, frame in enumerate(self.frames):
            if frame["type"] == kind:
                return self.frames.pop(index)
        while True:
            frame = await self.receive()
            if frame["type"] == kind:
                return frame
            self.frames.append(frame)

    async def messages(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` message frames, whatever else arrives between them (kept)."""
        return [await self.next_of("message") for _ in range(count)]

    async def all_messages(self, count: int) -> list[dict[str, Any]]:
        """The ``count`` message frames kept and to come, then checks that no other follows them before the reply to
        a request (the server handles a connection's events in order, so one on its way would come first)."""
        received = self.kept("message")
        received += await self.messages(count - len(received))
        await self.request("echo")
        assert self.kept("message") == []
        return received

    def kept(self, kind: str) -> list[dict[str, Any]]:
        """Take the kept frames of type ``kind`` (they are no longer kept)."""
        taken = [frame for frame in self.frames if frame["type"] == kind]
        self.frames = [frame for frame in self.frames if frame["type"] != kind]
        return taken


async def connect(url: str, user: str = "ada", name: str = "Ada", path: str = "/ws/streams/") -> ProtocolClient:
    """A client of the test app at ``url`` (``ws://host:port``) as ``user``, present under ``name``."""
    ws = await websockets.connect(
        f"{url}{path}?user={user}&name={name}", open_timeout=WAIT, close_timeout=WAIT, max_size=None
    )
    return ProtocolClient(ws)


@contextlib.asynccontextmanager
async def connected(
    url: str, user: str = "ada", name: str = "Ada", path: str = "/ws/streams/"
) -> AsyncIterator[ProtocolClient]:
    """``connect``, closing the connection on the way out."""
    client = await connect(url, user, name, path)
    try:
        yield client
    finally:
        await client.ws.close()
