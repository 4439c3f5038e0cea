"""The example's pages speak tether's stream protocol; ``PageClient`` is the protocol tests' client
(tests/streams/protocol_client.py) over a test communicator instead of a network connection."""

from __future__ import annotations

from typing import Any

from tests.streams.protocol_client import WAIT, ProtocolClient
from tether.testing import WebsocketCommunicator

__all__ = ["PageClient"]


class PageClient(ProtocolClient):
    def __init__(self, communicator: WebsocketCommunicator) -> None:
        super().__init__(ws=None)
        self.communicator = communicator

    async def send(self, frame: Any) -> None:
        await self.communicator.send_json_to(frame)

    async def receive(self) -> dict[str, Any]:
        frame: dict[str, Any] = await self.communicator.receive_json_from(timeout=WAIT)
        return frame

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

    async def data(self, count: int) -> list[Any]:
        """The data of the next ``count`` stream messages."""
        return [frame["data"] for frame in await self.messages(count)]
