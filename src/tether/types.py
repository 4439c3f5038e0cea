"""Typed aliases for the ASGI interface, used across tether so signatures read the same everywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

#: The connection scope an ASGI server passes to an application.
Scope: TypeAlias = MutableMapping[str, Any]
#: One ASGI event: a dict with at least a ``"type"`` key.
Message: TypeAlias = dict[str, Any]
#: Awaitable that returns the next event from the server.
Receive: TypeAlias = Callable[[], Awaitable[Message]]
#: Awaitable that sends one event to the server.
Send: TypeAlias = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
