"""Testing tools: drive consumers and routers without a server, or serve them for real in a live-server test.

Importing this package needs no server package; the live server is loaded when first used.
"""

from __future__ import annotations

from typing import Any

# Channels' testing package loads channels.routing (through its live server), and plug-ins' test set-ups use
# ``channels.routing`` after importing only ``channels.testing``; tether.testing offers the same.
import tether.routing  # noqa: F401
from tether.testing.application import ApplicationCommunicator, ApplicationFinished, CommunicatorTimeout
from tether.testing.http import HttpCommunicator
from tether.testing.websocket import WebsocketCommunicator

__all__ = [
    "ApplicationCommunicator",
    "ApplicationFinished",
    "ChannelsLiveServerTestCase",
    "CommunicatorTimeout",
    "HttpCommunicator",
    "WebsocketCommunicator",
]


def __getattr__(name: str) -> Any:
    if name == "ChannelsLiveServerTestCase":
        from tether.testing.live import ChannelsLiveServerTestCase

        return ChannelsLiveServerTestCase
    raise AttributeError(f"module 'tether.testing' has no attribute {name!r}")
