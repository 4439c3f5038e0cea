"""``StreamConsumer``: a ready WebSocket consumer speaking tether's stream protocol (v1, docs/protocol.md).

A browser (``tether.js``) subscribes to streams with the last epoch and offset it holds, receives what it missed and
then live messages, each offset once and in order; it may be present in a stream (a snapshot of who is there, then
diffs), and it calls ``request_<method>`` handlers with a correlation id. The application subclasses it and decides
who may subscribe to what in ``authorize``::

    class RoomConsumer(StreamConsumer):
        async def authorize(self, stream, *, presence):
            return stream.startswith("room.") and self.scope["user"].is_authenticated

        async def request_typing(self, params):
            user = self.scope["user"].get_username()
            await get_streams(self.channel_layer).publish("typing." + params["room"], {"user": user})
            return {"ok": True}

Why each connection keeps, per stream, the epoch and the last offset it sent: the order guarantee rests on it. A live
message at or below that offset is a duplicate (it was recovered already) and is skipped; one just above it is sent;
one further ahead means messages were missed on the way (the connection's channel was full while it recovered, for
example), and the gap is filled from the stream's history before it is sent, or the client is told to reload when the
history no longer holds it. So the client never sees an offset twice or out of order, and never a silent gap.

Frames are parsed by plain functions (``parse_frame``), and a stream's presence as this connection has told its
client is a plain class (``PresenceView``), both testable without a connection.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from tether.exceptions import InvalidChannelLayerError
from tether.generic.websocket import AsyncJsonWebsocketConsumer
from tether.presence import Member, get_presence
from tether.presence.consumer import AsyncPresenceConsumerMixin
from tether.streams import Recovery, get_streams
from tether.types import Message
from tether.utils import name_that_thing

__all__ = [
    "BAD_POSITION",
    "BAD_REQUEST",
    "FORBIDDEN",
    "INTERNAL",
    "MAX_OFFSET",
    "NOT_FOUND",
    "PROTOCOL_VERSION",
    "TOO_MANY_SUBSCRIPTIONS",
    "UNKNOWN_TYPE",
    "PresenceView",
    "ProtocolError",
    "Request",
    "RequestError",
    "StreamConsumer",
    "Subscribe",
    "Unsubscribe",
    "parse_frame",
]

logger = logging.getLogger("tether.streams")

#: The version of the protocol this module speaks (docs/protocol.md).
PROTOCOL_VERSION = 1

# Error codes of replies (docs/protocol.md#errors).
#: A malformed frame: not an object, a missing or ill-typed field.
BAD_REQUEST = "bad_request"
#: A frame whose ``type`` is none of the protocol's.
UNKNOWN_TYPE = "unknown_type"
#: ``authorize`` refused the subscription.
FORBIDDEN = "forbidden"
#: A request for a method the consumer has no ``request_<method>`` handler for.
NOT_FOUND = "not_found"
#: A subscribe beyond the consumer's ``max_subscriptions``.
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
#: An epoch or offset that is not one: an offset that is not an integer from 0 to ``MAX_OFFSET``, an epoch not a str.
BAD_POSITION = "bad_position"
#: A handler raised something other than ``RequestError``: logged with its traceback, the client told no more.
INTERNAL = "internal"

#: The largest offset a client may send: JavaScript's largest safe integer, so every offset survives a browser.
MAX_OFFSET = 2**53 - 1
#: The longest epoch or request id a client may send, in characters (epochs are short opaque strings).
MAX_TOKEN_LENGTH = 100
#: What a request method may be named: a Python identifier in lower case, so it names a ``request_<method>``.
_METHOD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class RequestError(Exception):
    """Raised by a ``request_<method>`` handler (or ``authorize``) to answer with an error of its own choosing:
    ``raise RequestError("not_allowed", "Only the room's owner may rename it.")``. Nothing is logged."""

    def __init__(self, code: str, message: str) -> None:
        if not isinstance(code, str) or not code:
            raise TypeError(f"RequestError's code must be a non-empty str, not {code!r}.")
        super().__init__(code, message)
        self.code = code
        self.message = str(message)


class ProtocolError(Exception):
    """A frame the protocol refuses: the reply to send (``id`` is the frame's when it had a usable one). ``log``:
    whether the consumer still has to log it (not for a ``RequestError``, the application's own answer, nor for an
    error logged with its traceback already)."""

    def __init__(self, code: str, message: str, id: int | str | None = None, *, log: bool = True) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.id = id
        self.log = log


@dataclass(frozen=True)
class Subscribe:
    """``{"type": "subscribe", "id", "stream", "epoch"?, "offset"?, "presence"?}``; ``epoch`` and ``offset`` come
    together or not at all."""

    id: int | str
    stream: str
    epoch: str | None = None
    offset: int | None = None
    presence: bool = False


@dataclass(frozen=True)
class Unsubscribe:
    """``{"type": "unsubscribe", "id", "stream"}``."""

    id: int | str
    stream: str


@dataclass(frozen=True)
class Request:
    """``{"type": "request", "id", "method", "params"?}``; absent params are an empty object."""

    id: int | str
    method: str
    params: dict[str, Any]


Frame = Subscribe | Unsubscribe | Request


def parse_frame(content: Any) -> Frame:
    """The frame a client sent, checked field by field; ``ProtocolError`` with the reply's code otherwise.

    Fields the protocol does not define are ignored, so a newer client can add some. Names are only checked for their
    type here: whether a stream name is valid is the layer's rule (``StreamConsumer`` checks it).
    """
    if not isinstance(content, dict):
        raise ProtocolError(BAD_REQUEST, f"A frame must be a JSON object, not {_json_kind(content)}.")
    kind = content.get("type")
    given_id = content.get("id")
    usable_id: int | str | None = given_id if _is_id(given_id) else None
    if not isinstance(kind, str):
        raise ProtocolError(BAD_REQUEST, 'A frame needs a "type" (a string).', usable_id)
    if kind not in ("subscribe", "unsubscribe", "request"):
        raise ProtocolError(
            UNKNOWN_TYPE, f"Unknown frame type {kind[:40]!r}: use subscribe, unsubscribe or request.", usable_id
        )
    if usable_id is None:
        raise ProtocolError(
            BAD_REQUEST,
            f'A {kind} frame needs an "id": an integer, or a string of 1 to {MAX_TOKEN_LENGTH} characters.',
        )
    frame_id = usable_id
    if kind == "request":
        method = content.get("method")
        if not isinstance(method, str) or not method:
            raise ProtocolError(BAD_REQUEST, 'A request needs a "method" (a string).', frame_id)
        params = content.get("params", {})
        if not isinstance(params, dict):
            raise ProtocolError(
                BAD_REQUEST, f'A request\'s "params" must be an object, not {_json_kind(params)}.', frame_id
            )
        return Request(frame_id, method, params)
    stream = content.get("stream")
    if not isinstance(stream, str) or not stream:
        raise ProtocolError(BAD_REQUEST, f'A {kind} frame needs a "stream" (a string).', frame_id)
    if kind == "unsubscribe":
        return Unsubscribe(frame_id, stream)
    presence = content.get("presence", False)
    if not isinstance(presence, bool):
        raise ProtocolError(BAD_REQUEST, f'"presence" must be true or false, not {_json_kind(presence)}.', frame_id)
    epoch, offset = content.get("epoch"), content.get("offset")
    if epoch is None and offset is None:
        return Subscribe(frame_id, stream, presence=presence)
    if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_TOKEN_LENGTH:
        raise ProtocolError(
            BAD_POSITION,
            f'"epoch" must be the string a reply or a message gave (1 to {MAX_TOKEN_LENGTH} characters), not '
            f"{_json_kind(epoch)}; send both epoch and offset, or neither.",
            frame_id,
        )
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        shown = f"{offset!r:.40}" if isinstance(offset, (int, float)) and not isinstance(offset, bool) else None
        raise ProtocolError(
            BAD_POSITION,
            f'"offset" must be an integer from 0 to {MAX_OFFSET}, not {shown or _json_kind(offset)}; send both '
            "epoch and offset, or neither.",
            frame_id,
        )
    return Subscribe(frame_id, stream, epoch, offset, presence)


def _is_id(value: Any) -> bool:
    if isinstance(value, str):
        return 0 < len(value) <= MAX_TOKEN_LENGTH
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_OFFSET


def _json_kind(value: Any) -> str:
    """How a decoded JSON value is named in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def reply(id: int | str | None, result: Any) -> dict[str, Any]:
    """A reply frame with a result."""
    return {"type": "reply", "id": id, "result": result}


def error_reply(id: int | str | None, code: str, message: str) -> dict[str, Any]:
    """A reply frame with an error."""
    return {"type": "reply", "id": id, "error": {"code": code, "message": message}}


class PresenceView:
    """A stream's presence as one connection has told its client: user -> channel -> metadata (oldest first).

    Built from a ``members()`` snapshot, then fed ``presence.join`` / ``presence.leave`` events, it turns them into
    diffs in the protocol's member shape (``{"user", "meta", "connections"}``): ``joins`` are users who arrived or
    whose connections changed (their state after the change, to put in place of what the client holds), ``leaves``
    users whose last connection left. An event that changes nothing the client was told (a join already in the
    snapshot, the leave of a connection it never saw) gives no diff, so events racing the snapshot are harmless.
    """

    def __init__(self, members: Iterable[Member]) -> None:
        self._users: dict[str, dict[str, dict[str, Any]]] = {
            member.user: {connection.channel: connection.meta for connection in member.connections}
            for member in members
        }

    def members(self) -> list[dict[str, Any]]:
        """Every member, in the protocol's shape."""
        return [_member_entry(user, connections) for user, connections in self._users.items()]

    def apply(self, kind: str, entries: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Apply a ``presence.join`` or ``presence.leave`` event's entries; the (joins, leaves) to tell the client."""
        changed: dict[str, dict[str, Any]] = {}  # user -> the metadata of their last connection seen, in order
        for entry in entries:
            user, channel, meta = str(entry["user"]), entry["channel"], entry["meta"]
            connections = self._users.get(user)
            if kind == "presence.join":
                if connections is None:
                    connections = self._users[user] = {}
                if channel not in connections or connections[channel] != meta:
                    connections.pop(channel, None)
                    connections[channel] = meta  # the newest connection last
                    changed[user] = meta
            elif connections is not None and channel in connections:
                changed[user] = connections.pop(channel)
                if not connections:
                    del self._users[user]
        joins, leaves = [], []
        for user, last_meta in changed.items():
            connections = self._users.get(user)
            if connections:
                joins.append(_member_entry(user, connections))
            else:
                leaves.append({"user": user, "meta": last_meta, "connections": 0})
        return joins, leaves


def _member_entry(user: str, connections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"user": user, "meta": next(reversed(connections.values())), "connections": len(connections)}


#: The consumer classes whose default ``authorize`` has said so in the log.
_refusing_by_default: set[type] = set()


@dataclass
class _Subscription:
    """One stream this connection subscribed to: where its client is (the last epoch and offset sent), and its
    presence when it asked for it. Recorded before the layer is touched, so a disconnect undoes whatever began."""

    epoch: str = ""
    offset: int = 0
    presence: PresenceView | None = None
    present: bool = False


class StreamConsumer(AsyncPresenceConsumerMixin, AsyncJsonWebsocketConsumer):
    """Serves tether's stream protocol v1 (docs/protocol.md) to one WebSocket client.

    Override ``authorize`` (the default refuses every stream) and add ``request_<method>(params)`` handlers. Presence
    in a stream is as ``get_presence_user()`` / ``get_presence_meta()`` say (the presence mixin's hooks: the
    authenticated user's pk and username by default); the stream's name is its presence group.

    ``stream_message``, ``stream_reset``, ``presence_join`` and ``presence_leave`` handle the layer's events for the
    protocol: a subclass that overrides one must call ``super()``.
    """

    #: The most streams one connection may be subscribed to at once; beyond, a subscribe is refused with
    #: ``too_many_subscriptions``.
    max_subscriptions: ClassVar[int] = 100
    #: A client that falls behind is disconnected (and recovers on reconnecting): a policy that drops messages would
    #: leave holes the client cannot see.
    slow_client_policy: ClassVar[str | None] = "disconnect"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.max_concurrency != 1:
            raise TypeError(
                f"{cls.__name__}.max_concurrency must stay 1: a stream's messages are sent in order because the "
                "consumer handles one event at a time."
            )
        if cls.slow_client_policy != "disconnect":
            raise TypeError(
                f"{cls.__name__}.slow_client_policy must stay 'disconnect': dropping a message would leave a gap the "
                "client cannot see; a disconnected client recovers what it missed when it subscribes again."
            )
        limit = cls.max_subscriptions
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise TypeError(f"{cls.__name__}.max_subscriptions must be a positive int, not {limit!r}.")

    _subscriptions: dict[str, _Subscription]
    #: The error codes already logged for this connection: each is logged once, however often the client repeats it.
    _logged: set[str]

    async def websocket_connect(self, message: Message) -> None:
        if self.channel_layer is None:
            raise InvalidChannelLayerError(
                f"{type(self).__name__} needs a channel layer, and {self.channel_layer_alias!r} is not configured; "
                "configure CHANNEL_LAYERS."
            )
        self._subscriptions = {}
        self._logged = set()
        await super().websocket_connect(message)

    # The hooks -----------------------------------------------------------------------------------------------------

    async def authorize(self, stream: str, *, presence: bool) -> bool:
        """Whether this connection may subscribe to ``stream`` (and, with ``presence``, be present in it). The scope
        is ``self.scope`` (its ``"user"`` with the auth middleware). Raise ``RequestError`` to refuse with a code of
        your own (``not_found`` for a stream that does not exist, for example).

        The default refuses every stream and says so in the log (once per class): which streams a client may read is
        the application's decision.
        """
        cls = type(self)
        if cls not in _refusing_by_default:
            _refusing_by_default.add(cls)
            logger.warning(
                "%s refuses every subscription (here to %r): StreamConsumer.authorize() refuses every stream until "
                "the application overrides it to say who may subscribe to what.",
                cls.__qualname__,
                stream,
            )
        return False

    # Frames from the client -----------------------------------------------------------------------------------------

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Parse a frame and answer it; every refusal is a reply with an error code (docs/protocol.md#errors)."""
        try:
            frame = parse_frame(content)
            if isinstance(frame, Subscribe):
                await self._subscribe(frame)
            elif isinstance(frame, Unsubscribe):
                await self._unsubscribe(frame)
            else:
                await self._request(frame)
        except ProtocolError as error:
            if error.log:
                self._log_refusal(error.code, error.message)
            await self.send_json(error_reply(error.id, error.code, error.message))

    async def _subscribe(self, frame: Subscribe) -> None:
        stream = frame.stream
        try:
            self.channel_layer.require_valid_group_name(stream)
        except TypeError as error:
            raise ProtocolError(BAD_REQUEST, f"Invalid stream name: {error}", frame.id) from None
        if stream in self._subscriptions:
            raise ProtocolError(
                BAD_REQUEST, f"Already subscribed to {stream!r} on this connection; unsubscribe first.", frame.id
            )
        if len(self._subscriptions) >= self.max_subscriptions:
            raise ProtocolError(
                TOO_MANY_SUBSCRIPTIONS,
                f"This connection is subscribed to {len(self._subscriptions)} streams, the most it may be "
                f"(max_subscriptions); unsubscribe from one first.",
                frame.id,
            )
        if not await self._call(frame.id, self.authorize, stream, presence=frame.presence):
            raise ProtocolError(FORBIDDEN, f"Not allowed to subscribe to {stream!r}.", frame.id)
        subscription = self._subscriptions[stream] = _Subscription()
        try:
            result = await self._start(stream, subscription, frame)
        except ProtocolError:
            await self._stop_quietly(stream)
            raise
        except Exception:
            logger.exception("%s could not subscribe to stream %r", name_that_thing(self), stream)
            await self._stop_quietly(stream)
            raise ProtocolError(
                INTERNAL, "The server could not subscribe you; try again later.", frame.id, log=False
            ) from None
        await self.send_json(reply(frame.id, result))
        if subscription.presence is not None:
            await self.send_json({"type": "presence", "stream": stream, "members": subscription.presence.members()})

    async def _start(self, stream: str, subscription: _Subscription, frame: Subscribe) -> dict[str, Any]:
        """Join the stream's presence (when asked), subscribe the channel, then send what the client missed; the
        subscribe reply's result. The channel is subscribed before recovering, so nothing published in between is
        missed: it arrives live after the recovered messages, and what the recovery already sent is skipped."""
        layer = self.channel_layer
        if frame.presence:
            subscription.present = True
            try:
                await get_presence(layer).join(
                    stream, self.channel_name, user=self.get_presence_user(), meta=self.get_presence_meta()
                )
            except (TypeError, ValueError) as error:  # metadata over the limit or not JSON, a name too long
                subscription.present = False  # refused before anything was stored: nothing to leave
                raise ProtocolError(BAD_REQUEST, f"Cannot be present in {stream!r}: {error}", frame.id) from None
        streams = get_streams(layer)
        await streams.subscribe(stream, self.channel_name)
        if frame.epoch is None or frame.offset is None:
            position = await streams.position(stream)
            subscription.epoch, subscription.offset = position.epoch, position.offset
            result: dict[str, Any] = {"epoch": position.epoch, "offset": position.offset, "recovered": 0}
        else:
            subscription.epoch, subscription.offset = frame.epoch, frame.offset
            recovery = await streams.recover(stream, frame.epoch, frame.offset)
            recovered = await self._send_recovered(stream, subscription, recovery)
            result = {"epoch": subscription.epoch, "offset": subscription.offset, "recovered": recovered}
            if recovery.reload is not None:
                result["reload"] = recovery.reload
        if frame.presence:
            subscription.presence = PresenceView(await get_presence(layer).members(stream))
        return result

    async def _send_recovered(self, stream: str, subscription: _Subscription, recovery: Recovery) -> int:
        """Send the recovered entries after the subscription's offset, in order, and move it on; with a reload
        verdict, send nothing and move it to the stream's position. How many messages were sent."""
        if recovery.reload is not None:
            subscription.epoch, subscription.offset = recovery.position.epoch, recovery.position.offset
            return 0
        sent = 0
        for entry in recovery.entries:
            if entry.offset > subscription.offset:
                await self._send_message(stream, subscription, entry.offset, entry.data)
                sent += 1
        return sent

    async def _send_message(self, stream: str, subscription: _Subscription, offset: int, data: Any) -> None:
        subscription.offset = offset
        await self.send_json(
            {"type": "message", "stream": stream, "epoch": subscription.epoch, "offset": offset, "data": data}
        )

    async def _unsubscribe(self, frame: Unsubscribe) -> None:
        """Unsubscribe (and leave the stream's presence); unsubscribing from a stream not subscribed to is a
        success too, so a client may repeat it safely."""
        subscribed = frame.stream in self._subscriptions
        try:
            await self._stop(frame.stream)
        except Exception:
            logger.exception("%s could not unsubscribe from stream %r", name_that_thing(self), frame.stream)
            raise ProtocolError(
                INTERNAL, "The server could not unsubscribe you; try again later.", frame.id, log=False
            ) from None
        await self.send_json(reply(frame.id, {"subscribed": subscribed}))

    async def _stop(self, stream: str) -> None:
        """Undo whatever the subscription to ``stream`` began: the layer's subscription, the presence."""
        subscription = self._subscriptions.pop(stream, None)
        if subscription is None:
            return
        try:
            await get_streams(self.channel_layer).unsubscribe(stream, self.channel_name)
        finally:
            if subscription.present:
                await get_presence(self.channel_layer).leave(stream, self.channel_name)

    async def _stop_quietly(self, stream: str) -> None:
        """``_stop``, logging a failure instead of raising it: on a disconnect, or after a failed subscribe whose own
        error is the one to report (a group membership left behind expires after the layer's ``group_expiry``)."""
        try:
            await self._stop(stream)
        except Exception:
            logger.exception("%s could not unsubscribe from stream %r", name_that_thing(self), stream)

    async def _request(self, frame: Request) -> None:
        handler = getattr(self, "request_" + frame.method, None) if _METHOD_NAME.fullmatch(frame.method) else None
        if handler is None or not callable(handler):
            raise ProtocolError(NOT_FOUND, f"No request method {frame.method[:64]!r}.", frame.id)
        result = await self._call(frame.id, handler, frame.params)
        try:
            text = await self.encode_json(reply(frame.id, result))
        except (TypeError, ValueError):
            logger.exception(
                "%s.request_%s returned a result that cannot be sent as JSON", type(self).__name__, frame.method
            )
            raise ProtocolError(INTERNAL, "The server could not answer this request.", frame.id, log=False) from None
        await self.send(text_data=text)

    async def _call(self, frame_id: int | str, handler: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an application hook; ``RequestError`` becomes its error reply, anything else ``internal`` (logged
        with the traceback)."""
        try:
            result = handler(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except RequestError as error:
            raise ProtocolError(error.code, error.message, frame_id, log=False) from None
        except Exception:
            logger.exception("%s: %s raised", name_that_thing(self), getattr(handler, "__name__", handler))
            raise ProtocolError(INTERNAL, "The server failed to handle this request.", frame_id, log=False) from None
        return result

    def _log_refusal(self, code: str, message: str) -> None:
        """Log a refused frame once per code and connection."""
        self._warn_once(
            code,
            "%s refused a frame (%s): %s (further %s refusals on this connection are not logged)",
            name_that_thing(self),
            code,
            message,
            code,
        )

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log a warning the first time ``key`` comes up on this connection only."""
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message, *args)

    # Events from the layer ------------------------------------------------------------------------------------------

    async def stream_message(self, event: Message) -> None:
        """A live message of a subscribed stream: sent when it is the next offset, skipped when the client has it,
        and the gap before it filled from history when messages are missing (or the client told to reload)."""
        stream, epoch, offset = event.get("stream"), event.get("epoch"), event.get("offset")
        if not isinstance(stream, str) or stream not in self._subscriptions:
            return  # unsubscribed meanwhile
        subscription = self._subscriptions[stream]
        if not isinstance(epoch, str) or not isinstance(offset, int):
            self._warn_once(
                "stream.message",
                "%s dropped a stream.message of %r without an epoch and an offset: send to a stream with "
                "get_streams().publish(), not with group_send()",
                name_that_thing(self),
                stream,
            )
            return
        if epoch == subscription.epoch:
            if offset <= subscription.offset:
                return
            if offset == subscription.offset + 1:
                await self._send_message(stream, subscription, offset, event.get("data"))
                return
        await self._catch_up(stream, subscription)

    async def stream_reset(self, event: Message) -> None:
        """The streams watch gives the stream's position: Redis lost the stream's history or this connection's
        membership, which the watch restored (a Redis restart without persistence, say), or the layer dropped
        messages of the stream for this connection's full channel. Unless the client is at that position already,
        recover from where it is, which sends what it missed or a ``reload`` frame."""
        stream, epoch, offset = event.get("stream"), event.get("epoch"), event.get("offset")
        if not isinstance(stream, str) or not isinstance(offset, int):
            return
        subscription = self._subscriptions.get(stream)
        if subscription is None or (epoch == subscription.epoch and offset <= subscription.offset):
            return  # unsubscribed meanwhile, or there already
        await self._catch_up(stream, subscription)

    async def _catch_up(self, stream: str, subscription: _Subscription) -> None:
        """Fill a gap from history; when it cannot be filled (another epoch, trimmed), tell the client to reload
        from the stream's current position with a ``reload`` frame."""
        epoch, offset = subscription.epoch, subscription.offset
        recovery = await get_streams(self.channel_layer).recover(stream, epoch, offset)
        await self._send_recovered(stream, subscription, recovery)
        if recovery.reload is not None:
            logger.info(
                "%s: stream %r cannot be recovered from epoch %r offset %d (%s); its client is told to reload",
                name_that_thing(self),
                stream,
                epoch,
                offset,
                recovery.reload,
            )
            await self.send_json(
                {
                    "type": "reload",
                    "stream": stream,
                    "reason": recovery.reload,
                    "epoch": recovery.position.epoch,
                    "offset": recovery.position.offset,
                }
            )

    async def presence_join(self, event: Message) -> None:
        await self._presence_event(event)

    async def presence_leave(self, event: Message) -> None:
        await self._presence_event(event)

    async def _presence_event(self, event: Message) -> None:
        subscription = self._subscriptions.get(event["group"])
        if subscription is None or subscription.presence is None:
            return
        joins, leaves = subscription.presence.apply(event["type"], event["members"])
        if joins or leaves:
            await self.send_json({"type": "presence.diff", "stream": event["group"], "joins": joins, "leaves": leaves})

    async def websocket_disconnect(self, message: Message) -> None:
        """Unsubscribe from every stream and leave their presence, then disconnect as the consumer does."""
        for stream in list(getattr(self, "_subscriptions", ())):
            await self._stop_quietly(stream)
        await super().websocket_disconnect(message)
