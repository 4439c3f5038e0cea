"""WebSocket consumers: connect, receive and disconnect handlers on top of the ASGI WebSocket events.

Four classes, sync and async, plain and JSON. Groups named in ``groups`` are joined before ``connect()`` runs and
left after ``disconnect()``. A message larger than the consumer's ``max_message_size`` (or the project's
``TETHER_MAX_MESSAGE_SIZE``) closes the connection with 1009, and JSON nested deeper than ``max_json_depth`` with
1007, each with one warning (docs/limits.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from asgiref.sync import async_to_sync

from tether import limits as _limits
from tether.consumer import AsyncConsumer, SyncConsumer
from tether.denial import denial_messages
from tether.exceptions import AcceptConnection, DenyConnection, InvalidChannelLayerError, StopConsumer
from tether.generic.headers import Headers, encode_headers
from tether.limits import DEFAULT_MAX_JSON_DEPTH, INVALID_PAYLOAD, MESSAGE_TOO_BIG, json_nesting_exceeds, message_size
from tether.limits import max_message_size as project_max_message_size
from tether.ratelimit.config import check_overrides
from tether.ratelimit.limiter import (
    HTTP_TOO_MANY_REQUESTS,
    RATE_LIMITED,
    MessageGate,
    Refusal,
    admit_connection,
    admit_connection_sync,
)
from tether.types import ASGIApp, Message
from tether.utils import name_that_thing

__all__ = [
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
]

logger = logging.getLogger("tether.generic.websocket")

#: Close codes a server may send: RFC 6455 section 7.4 (1004-1006 and 1015 are reserved) plus 3000-4999.
_SENDABLE_CODES = frozenset([1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)])
#: RFC 6455 limits a close frame's payload to 125 bytes, 2 of which hold the code.
_MAX_REASON_BYTES = 123

#: Close code for a binary frame sent to a JSON consumer (RFC 6455: "a type of data it cannot accept").
UNSUPPORTED_DATA = 1003


def _accept_message(subprotocol: str | None, headers: Iterable[tuple[Any, Any]] | None) -> Message:
    message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
    if headers:
        message["headers"] = encode_headers(headers)
    return message


def _frame_message(text_data: str | None, bytes_data: bytes | None) -> Message:
    if text_data is not None:
        if not isinstance(text_data, str):
            raise TypeError(f"text_data must be a str, not {type(text_data).__name__}.")
        return {"type": "websocket.send", "text": text_data}
    if bytes_data is not None:
        if not isinstance(bytes_data, (bytes, bytearray, memoryview)):
            raise TypeError(f"bytes_data must be bytes, not {type(bytes_data).__name__}.")
        return {"type": "websocket.send", "bytes": bytes(bytes_data)}
    raise ValueError("send() needs text_data or bytes_data.")


def _close_message(code: int | bool | None, reason: str | None) -> Message:
    message: Message = {"type": "websocket.close"}
    if code is not None and code is not True and code is not False:
        if not isinstance(code, int) or code not in _SENDABLE_CODES:
            raise ValueError(
                f"Close code {code!r} cannot be sent: use 1000 (normal), 1001-1003, 1007-1014, "
                "or an application code from 3000 to 4999."
            )
        message["code"] = code
    if reason:
        encoded = reason.encode("utf-8")
        if len(encoded) > _MAX_REASON_BYTES:
            reason = encoded[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
        message["reason"] = reason
    return message


def _check_not_accepted(consumer: AsyncConsumer) -> None:
    if getattr(consumer, "_accepted", False):
        raise RuntimeError(
            f"{type(consumer).__name__}.deny() refuses a handshake, but this connection was accepted already; "
            "call close() to end an accepted connection."
        )


def _require_groups_support(consumer: AsyncConsumer) -> None:
    layer = consumer.channel_layer
    if layer is None or "groups" not in getattr(layer, "extensions", ()):
        raise InvalidChannelLayerError(
            f"{type(consumer).__name__}.groups is set but the channel layer "
            f"{consumer.channel_layer_alias!r} is {'not configured' if layer is None else 'without group support'}; "
            "configure CHANNEL_LAYERS with a layer that supports groups."
        )


def _json_frame_error(consumer: AsyncConsumer, error: Exception | None) -> tuple[int, str]:
    """Log why a frame could not be decoded; return the close code and reason that tell the client."""
    if error is None:
        logger.warning("%s received a binary frame; JSON consumers take text frames only.", name_that_thing(consumer))
        return UNSUPPORTED_DATA, "JSON text frames only"
    if isinstance(error, RecursionError):
        # A custom decoder that recursed too deep: the traceback would be thousands of frames of the decoder.
        logger.warning("%s received JSON nested too deeply for its decoder.", name_that_thing(consumer))
        return INVALID_PAYLOAD, "JSON nested too deeply"
    logger.warning("%s received a frame that is not valid JSON: %s", name_that_thing(consumer), error)
    return INVALID_PAYLOAD, f"Invalid JSON: {error}"


def _json_too_deep(consumer: AsyncConsumer, limit: int) -> tuple[int, str]:
    """Log a frame refused for its nesting; return the close code and reason that tell the client."""
    logger.warning(
        "%s received JSON nested deeper than %d levels (max_json_depth); closing with %d.",
        name_that_thing(consumer),
        limit,
        INVALID_PAYLOAD,
    )
    return INVALID_PAYLOAD, f"JSON nested deeper than {limit} levels"


def _oversize(consumer: AsyncConsumer, text: str | None, data: bytes | None) -> tuple[int, str] | None:
    """The close code and reason for a received message over the consumer's size limit (logged), or ``None``.

    The limit is the consumer's ``max_message_size``, or the project's ``TETHER_MAX_MESSAGE_SIZE``. The server is
    given the project's limit too (tether's runserver and server helper do it; see docs/deploying.md for uvicorn's
    ``--ws-max-size``), so this check matters for a consumer with a lower limit and for servers configured otherwise.
    It runs for every message, so a message of at most a quarter of the limit (a character is at most four bytes of
    UTF-8) is let through after one ``len``: about 0.1 µs less per message than measuring it. The async consumer's
    ``websocket_receive`` makes that first test itself and calls this only past it; the sync consumer calls it for
    every message.
    """
    limit = consumer.max_message_size or project_max_message_size()  # type: ignore[attr-defined]
    if len(text if text is not None else data or b"") * 4 <= limit:
        return None
    size = message_size(text, data, limit)
    if size <= limit:
        return None
    consumer._refused_for_size = True  # type: ignore[attr-defined]
    logger.warning(
        "%s received a message of %d bytes, over its limit of %d (max_message_size or TETHER_MAX_MESSAGE_SIZE); "
        "closing with %d.",
        name_that_thing(consumer),
        size,
        limit,
        MESSAGE_TOO_BIG,
    )
    return MESSAGE_TOO_BIG, f"Message over {limit} bytes"


def _log_server_refusal(consumer: AsyncConsumer, message: Message) -> None:
    """Say once why the server closed with 1009: the client sent a message over the server's size limit.

    uvicorn refuses such a frame itself (it never reaches the consumer) and reports the close code in the
    disconnect event; the consumer's own refusal (``_oversize``) has logged already and is not repeated.
    """
    if message.get("code") == MESSAGE_TOO_BIG and not getattr(consumer, "_refused_for_size", False):
        logger.warning(
            "%s: the connection closed with %d (message too big: %s); the server's limit is ws_max_size, set from "
            "TETHER_MAX_MESSAGE_SIZE by tether's server.",
            name_that_thing(consumer),
            MESSAGE_TOO_BIG,
            message.get("reason") or "no reason given",
        )


class _RateLimited:
    """The rate limit attributes of the WebSocket consumers (docs/limits.md#rate-limits)."""

    #: Rate limits of this class over ``TETHER_RATE_LIMITS``, such as ``{"messages_per_connection": "5/s"}``; a
    #: ``None`` rate turns a project limit off. Checked when the class is defined, so a typo fails at import.
    rate_limits: ClassVar[Mapping[str, Any] | None] = None
    #: How many messages in a row a rate limit refuses before the connection is closed with 4429 (``None``: never).
    rate_limit_close_after: ClassVar[int | None] = 1
    #: Set at the handshake when the class limits messages; ``None`` keeps the per-message cost to this check.
    _message_gate: MessageGate | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overrides = cls.__dict__.get("rate_limits")
        if overrides is not None:
            cls._checked_rate_limits = check_overrides(cls.__qualname__, overrides)  # type: ignore[attr-defined]

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> ASGIApp:
        """The consumer's ASGI application (``AsyncConsumer.as_asgi``); ``rate_limits`` is refused as a keyword,
        since limits are resolved per class, once."""
        if "rate_limits" in initkwargs:
            raise TypeError(
                f"{cls.__name__}.as_asgi() cannot take rate_limits: rate limits belong to the class. Define a "
                f"subclass with rate_limits = {initkwargs['rate_limits']!r:.80} and route that one."
            )
        return super().as_asgi(**initkwargs)  # type: ignore[misc, no-any-return]

    def _closes_for_rate(self, refusal: Refusal) -> bool:
        """Whether this refusal is the one that closes the connection (the ``rate_limit_close_after``-th in a row)."""
        close_after = self.rate_limit_close_after
        return close_after is not None and refusal.in_a_row == close_after

    def _tells_of_refusal(self, refusal: Refusal) -> bool:
        """Whether a JSON client is sent the error event for this refusal: those before the closing one."""
        close_after = self.rate_limit_close_after
        return close_after is None or refusal.in_a_row < close_after


class WebsocketConsumer(_RateLimited, SyncConsumer):
    """A synchronous WebSocket consumer: override ``connect``, ``receive`` and ``disconnect``.

    ``groups`` lists groups to join for the connection's lifetime (needs a channel layer with groups).
    """

    groups: ClassVar[list[str] | None] = None
    #: The largest message this consumer takes, in bytes; ``None`` means the project's ``TETHER_MAX_MESSAGE_SIZE``.
    max_message_size: ClassVar[int | None] = None

    def websocket_connect(self, message: Message) -> None:
        refusal = admit_connection_sync(self)
        if refusal is not None:
            self.deny(HTTP_TOO_MANY_REQUESTS, refusal.http_body(), refusal.http_headers())
            return
        if self.groups:
            _require_groups_support(self)
            for group in self.groups:
                async_to_sync(self.channel_layer.group_add)(group, self.channel_name)  # type: ignore[union-attr]
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection as denial:
            if denial.status is None:
                self.close()
            else:
                self.deny(denial.status, denial.body, denial.headers)

    def connect(self) -> None:
        """Called when the client opens the connection; accepts it unless overridden."""
        self.accept()

    def accept(self, subprotocol: str | None = None, headers: Iterable[tuple[Any, Any]] | None = None) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding response headers."""
        super().send(_accept_message(subprotocol, headers))
        self._accepted = True

    def deny(self, status: int = 403, body: bytes | str = b"", headers: Headers | None = None) -> None:
        """Refuse the handshake with an HTTP response: ``status``, ``headers`` and ``body`` (``str`` is sent as UTF-8).

        Call it from ``connect()`` instead of ``accept()``. Where the server lacks the ASGI WebSocket Denial Response
        extension, the client gets a plain 403 instead. Raises ``RuntimeError`` once the connection was accepted.
        """
        _check_not_accepted(self)
        for message in denial_messages(self.scope, status, body, headers):
            super().send(message)

    def websocket_receive(self, message: Message) -> None:
        gate = self._message_gate
        if gate is not None:
            refused = gate.take_sync()
            if refused is not None:
                self.rate_limited(refused)
                return
        text = message.get("text")
        data = None if text is not None else message.get("bytes")
        refusal = _oversize(self, text, data)
        if refusal is not None:
            self.close(*refusal)
        elif text is not None:
            self.receive(text_data=text)
        else:
            self.receive(bytes_data=data)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the client."""

    def rate_limited(self, refusal: Refusal) -> None:
        """Called instead of ``receive`` for a frame over a rate limit: closes with 4429 at the
        ``rate_limit_close_after``-th refusal in a row (the first, unless the class says otherwise)."""
        if self._closes_for_rate(refusal):
            self.close(RATE_LIMITED, refusal.close_reason)

    def send(  # type: ignore[override]
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool | int = False
    ) -> None:
        """Send a text or binary frame; ``close=True`` (or a close code) closes the connection afterwards."""
        super().send(_frame_message(text_data, bytes_data))
        if close:
            self.close(close)

    def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (before ``accept()``, this refuses it: HTTP 403)."""
        super().send(_close_message(code, reason))

    def websocket_disconnect(self, message: Message) -> None:
        _log_server_refusal(self, message)
        if self.groups and self.channel_layer is not None:
            for group in self.groups:
                async_to_sync(self.channel_layer.group_discard)(group, self.channel_name)
        self.disconnect(message.get("code", 1005))
        raise StopConsumer()

    def disconnect(self, code: int) -> None:
        """Called when the connection has closed, for either side's reason."""


class JsonWebsocketConsumer(WebsocketConsumer):
    """A synchronous WebSocket consumer that speaks JSON: override ``receive_json``, call ``send_json``.

    A frame that is not valid JSON, or nested deeper than ``max_json_depth``, closes the connection with 1007, a
    binary frame with 1003; each is logged.
    """

    #: How many levels arrays and objects may nest in a frame; ``None`` turns the check off.
    max_json_depth: ClassVar[int | None] = DEFAULT_MAX_JSON_DEPTH

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            self.close(*_json_frame_error(self, None))
            return
        depth = self.max_json_depth
        if depth is not None and json_nesting_exceeds(text_data, depth):
            self.close(*_json_too_deep(self, depth))
            return
        try:
            content = self.decode_json(text_data)
        except (ValueError, RecursionError) as error:
            self.close(*_json_frame_error(self, error))
            return
        self.receive_json(content, **kwargs)

    #: JSON clients are told of each refused frame (an error event), and closed with 4429 after ten in a row.
    rate_limit_close_after: ClassVar[int | None] = 10

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON frame."""

    def rate_limited(self, refusal: Refusal) -> None:
        """Called instead of ``receive`` for a frame over a rate limit: sends the error event ``refusal.event()``
        (``{"type": "error", "code": "rate_limited", ...}``), then closes with 4429 at the
        ``rate_limit_close_after``-th refusal in a row. Later frames are dropped until the disconnect."""
        if self._closes_for_rate(refusal):
            self.close(RATE_LIMITED, refusal.close_reason)
        elif self._tells_of_refusal(refusal):
            self.send_json(refusal.event())

    def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` as JSON and send it as a text frame."""
        super().send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        """Decode a text frame; override to use another decoder. Raise ``ValueError`` for a frame that is not JSON."""
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        """Encode ``content`` for ``send_json``; override to use another encoder."""
        return json.dumps(content)


class AsyncWebsocketConsumer(_RateLimited, AsyncConsumer):
    """An asyncio WebSocket consumer: override ``connect``, ``receive`` and ``disconnect`` as ``async def``.

    ``groups`` lists groups to join for the connection's lifetime (needs a channel layer with groups).
    """

    groups: ClassVar[list[str] | None] = None
    #: The largest message this consumer takes, in bytes; ``None`` means the project's ``TETHER_MAX_MESSAGE_SIZE``.
    max_message_size: ClassVar[int | None] = None

    async def websocket_connect(self, message: Message) -> None:
        refusal = await admit_connection(self)
        if refusal is not None:
            await self.deny(HTTP_TOO_MANY_REQUESTS, refusal.http_body(), refusal.http_headers())
            return
        if self.groups:
            _require_groups_support(self)
            for group in self.groups:
                await self.channel_layer.group_add(group, self.channel_name)  # type: ignore[union-attr]
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection as denial:
            if denial.status is None:
                await self.close()
            else:
                await self.deny(denial.status, denial.body, denial.headers)

    async def connect(self) -> None:
        """Called when the client opens the connection; accepts it unless overridden."""
        await self.accept()

    async def accept(self, subprotocol: str | None = None, headers: Iterable[tuple[Any, Any]] | None = None) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding response headers."""
        await super().send(_accept_message(subprotocol, headers))
        self._accepted = True

    async def deny(self, status: int = 403, body: bytes | str = b"", headers: Headers | None = None) -> None:
        """Refuse the handshake with an HTTP response: ``status``, ``headers`` and ``body`` (``str`` is sent as UTF-8).

        Call it from ``connect()`` instead of ``accept()``, for example ``await self.deny(401, '{"error": "login"}',
        headers={"content-type": "application/json"})`` or ``await self.deny(429, headers={"retry-after": "30"})``.
        Where the server lacks the ASGI WebSocket Denial Response extension, the client gets a plain 403 instead.
        Raises ``RuntimeError`` once the connection was accepted.
        """
        _check_not_accepted(self)
        for message in denial_messages(self.scope, status, body, headers):
            await super().send(message)

    async def websocket_receive(self, message: Message) -> None:
        gate = self._message_gate
        if gate is not None:
            refused = await gate.take()
            if refused is not None:
                await self.rate_limited(refused)
                return
        text = message.get("text")
        data = None if text is not None else message.get("bytes")
        # _oversize's first test written out (it runs for every message): a message of at most a quarter of the
        # limit passes after one len() (a character is at most four bytes of UTF-8).
        if len(text if text is not None else data or b"") * 4 > (
            self.max_message_size or _limits.cached_max_message_size or project_max_message_size()
        ) and (refusal := _oversize(self, text, data)):
            await self.close(*refusal)
        elif text is not None:
            await self.receive(text_data=text)
        else:
            await self.receive(bytes_data=data)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the client."""

    async def rate_limited(self, refusal: Refusal) -> None:
        """Called instead of ``receive`` for a frame over a rate limit: closes with 4429 at the
        ``rate_limit_close_after``-th refusal in a row (the first, unless the class says otherwise)."""
        if self._closes_for_rate(refusal):
            await self.close(RATE_LIMITED, refusal.close_reason)

    async def send(  # type: ignore[override]
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool | int = False
    ) -> None:
        """Send a text or binary frame; ``close=True`` (or a close code) closes the connection afterwards."""
        # A text frame, the common case, built here; _frame_message checks and builds the others. Straight to the
        # connection's outbound queue (AsyncConsumer.send's other job, noting a departed client, is the queue's too
        # on a WebSocket): a coroutine less per frame sent.
        await self.base_send(
            {"type": "websocket.send", "text": text_data}
            if type(text_data) is str
            else _frame_message(text_data, bytes_data)
        )
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (before ``accept()``, this refuses it: HTTP 403)."""
        await super().send(_close_message(code, reason))

    async def websocket_disconnect(self, message: Message) -> None:
        _log_server_refusal(self, message)
        if self.groups and self.channel_layer is not None:
            for group in self.groups:
                await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message.get("code", 1005))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Called when the connection has closed, for either side's reason."""


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """An asyncio WebSocket consumer that speaks JSON: override ``receive_json``, await ``send_json``.

    A frame that is not valid JSON, or nested deeper than ``max_json_depth``, closes the connection with 1007, a
    binary frame with 1003; each is logged.
    """

    #: How many levels arrays and objects may nest in a frame; ``None`` turns the check off.
    max_json_depth: ClassVar[int | None] = DEFAULT_MAX_JSON_DEPTH

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            await self.close(*_json_frame_error(self, None))
            return
        depth = self.max_json_depth
        if depth is not None and json_nesting_exceeds(text_data, depth):
            await self.close(*_json_too_deep(self, depth))
            return
        try:
            content = await self.decode_json(text_data)
        except (ValueError, RecursionError) as error:
            await self.close(*_json_frame_error(self, error))
            return
        await self.receive_json(content, **kwargs)

    #: JSON clients are told of each refused frame (an error event), and closed with 4429 after ten in a row.
    rate_limit_close_after: ClassVar[int | None] = 10

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON frame."""

    async def rate_limited(self, refusal: Refusal) -> None:
        """Called instead of ``receive`` for a frame over a rate limit: sends the error event ``refusal.event()``
        (``{"type": "error", "code": "rate_limited", ...}``), then closes with 4429 at the
        ``rate_limit_close_after``-th refusal in a row. Later frames are dropped until the disconnect."""
        if self._closes_for_rate(refusal):
            await self.close(RATE_LIMITED, refusal.close_reason)
        elif self._tells_of_refusal(refusal):
            await self.send_json(refusal.event())

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` as JSON and send it as a text frame."""
        await super().send(text_data=await self.encode_json(content), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        """Decode a text frame; override to use another decoder. Raise ``ValueError`` for a frame that is not JSON."""
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        """Encode ``content`` for ``send_json``; override to use another encoder."""
        return json.dumps(content)
