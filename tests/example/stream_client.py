"""The example's pages speak tether's stream protocol; ``PageClient`` speaks it over a test communicator: numbered
frames, replies matched by id, and the frames that came meanwhile (messages, presence) kept in arrival order."""

from __future__ import annotations

import itertools
from typing import Any

from tether.testing import WebsocketCommunicator

__all__ = ["PageClient"]

#: Seconds to wait for any one frame: generous for a loaded machine, never reached when things work.
WAIT = 10


class PageClient:
    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.ids = itertools.count(1)
        #: Frames received while waiting for something else, in arrival order.
        self.frames: list[dict[str, Any]] = []

    async def call(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send ``frame`` with the next id; its reply."""
        frame = {**frame, "id": next(self.ids)}
        await self.communicator.send_json_to(frame)
        while True:
            received = await self.communicator.receive_json_from(timeout=WAIT)
            if received.get("type") == "reply" and received.get("id") == frame["id"]:
                return received
            self.frames.append(received)

    async def request(self, method: str, **params: Any) -> dict[str, Any]:
        """The reply to a request (``result`` or ``error``)."""
        return await self.call({"type": "request", "method": method, "params": params})

    async def result(self, method: str, **params: Any) -> Any:
        """The result of a request that must succeed."""
        reply = await self.request(method, **params)
        assert "result" in reply, reply
        return reply["result"]

    async def error(self, method: str, **params: Any) -> dict[str, str]:
        """The error of a request that must fail."""
        reply = await self.request(method, **params)
        assert "error" in reply, reply
        error: dict[str, str] = reply["error"]
        return error

    async def subscribe(self, stream: str, **fields: Any) -> dict[str, Any]:
        return await self.call({"type": "subscribe", "stream": stream, **fields})

    async def next_of(self, kind: str) -> dict[str, Any]:
        """The first kept or next received frame of type ``kind`` (frames of other types are kept)."""
        for index, frame in enumerate(self.frames):
            if frame.get("type") == kind:
                return self.frames.pop(index)
        while True:
            frame = await self.communicator.receive_json_from(timeout=WAIT)
            if frame.get("type") == kind:
                return frame
            self.frames.append(frame)

    async def messages(self, count: int) -> list[Any]:
        """The data of the next ``count`` stream messages."""
        return [(await self.next_of("message"))["data"] for _ in range(count)]
