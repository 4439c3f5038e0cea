"""The exceptions tether raises, and the ones consumers raise to steer a connection."""

from __future__ import annotations

from typing import Any

__all__ = [
    "AcceptConnection",
    "ChannelFull",
    "DenyConnection",
    "InvalidChannelLayerError",
    "LayerUnavailable",
    "MessageTooLarge",
    "RequestAborted",
    "RequestTimeout",
    "StopConsumer",
]


class RequestAborted(Exception):
    """The client went away before the whole request body arrived."""


class RequestTimeout(RequestAborted):
    """The request body did not arrive in time."""


class InvalidChannelLayerError(ValueError):
    """The channel layer is not configured, cannot be built, or lacks a feature the caller needs."""


class AcceptConnection(Exception):
    """Raise in ``connect()`` to accept the WebSocket connection."""


class DenyConnection(Exception):
    """Raise in ``connect()`` to refuse the WebSocket connection (the server answers HTTP 403).

    tether-only keywords: with a ``status`` (and optionally ``body`` and ``headers``), the refusal is that HTTP
    response, as with the consumer's ``deny()``, where the server supports it (docs/limits.md).
    """

    def __init__(self, *args: object, status: int | None = None, body: bytes | str = b"", headers: Any = None) -> None:
        super().__init__(*args)
        self.status = status
        self.body = body
        self.headers = headers


class ChannelFull(Exception):
    """The channel holds ``capacity`` messages already; the message was not sent."""


class MessageTooLarge(Exception):
    """The message is larger than the layer accepts; the message was not sent."""


class StopConsumer(Exception):
    """Raise in a handler to end the consumer cleanly."""


class LayerUnavailable(ConnectionError):
    """The channel layer's backing service could not be reached within the configured wait.

    tether-only. Raised by layer operations that cannot be served (a ``send`` while Redis is down) instead of hanging;
    receive loops ride out the outage and reconnect on their own.
    """
