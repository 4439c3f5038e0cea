"""Consumers: one instance per connection, dispatching each event to a method named after its type.

A consumer waits on two inputs at once, the ASGI ``receive`` and (when a channel layer is configured) its own
channel on the layer, and handles their messages one at a time, in arrival order (or up to ``max_concurrency`` at
once, when it asks). A WebSocket disconnect cancels the handlers still running, and a send to a client that has gone
away ends the handler quietly: the disconnect that follows ends the consumer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Hashable
from time import perf_counter
from typing import Any, ClassVar

from asgiref.sync import async_to_sync

from tether import DEFAULT_CHANNEL_LAYER, metrics, tracing
from tether.db import aclose_old_connections, database_sync_to_async, has_open_connections
from tether.dispatch import LazySource, await_many_dispatch
from tether.drain import DRAIN_MESSAGE_TYPE, SERVICE_RESTART, enter
from tether.exceptions import StopConsumer
from tether.layers import get_channel_layer
from tether.layers.base import BaseChannelLayer
from tether.layers.durable import Delivery
from tether.limits import (
    check_slow_client_policy,
    outbound_queue_size,
    slow_client_policy,
    ws_ping_interval,
    ws_ping_timeout,
)
from tether.metrics.observe import ConnectionWatch
from tether.metrics.tally import LIFECYCLE_KINDS
from tether.outbound import Outbox, SendWatcher
from tether.tracing import TRACE_KEY
from tether.types import ASGIApp, Message, Receive, Scope, Send
from tether.utils import name_that_thing

__all__ = ["AsyncConsumer", "SyncConsumer", "get_handler_name"]

logger = logging.getLogger("tether.consumer")


# Message types seen so far and their handler names: a project has a few dozen types, and every message needs one.
_handler_names: dict[str, str] = {}
_MAX_CACHED_HANDLER_NAMES = 1024


def get_handler_name(message: Message) -> str:
    """The name of the method that handles ``message``: its ``type`` with ``.`` replaced by ``_``.

    Raises ``ValueError`` for a message without a ``type`` and for a type that would name a private method.
    """
    try:
        message_type = message["type"]
    except (KeyError, TypeError):
        raise ValueError(f"Incoming message has no 'type' key: {message!r:.200}") from None
    handler_name = _handler_names.get(message_type) if type(message_type) is str else None
    if handler_name is not None:
        return handler_name
    if not isinstance(message_type, str):
        raise ValueError(f"Incoming message 'type' must be a str, not {message_type!r:.100}.")
    handler_name = message_type.replace(".", "_")
    if handler_name.startswith("_"):
        raise ValueError(f"Malformed message type {message_type!r}: it must not start with '_' or '.'.")
    if len(_handler_names) < _MAX_CACHED_HANDLER_NAMES:
        _handler_names[message_type] = handler_name
    return handler_name


def _handler_for(consumer: AsyncConsumer, message: Message) -> Any:
    name = get_handler_name(message)
    handler = getattr(consumer, name, None)
    if handler is None or not callable(handler):
        raise ValueError(
            f"{type(consumer).__name__} has no handler for message type {message['type']!r}; "
            f"define a method named {name!r}."
        )
    return handler


#: Messages of the connection itself, which run alone when a consumer handles several messages at once.
_LIFECYCLE_TYPES = frozenset(
    {"websocket.connect", "websocket.disconnect", "http.request", "http.disconnect", DRAIN_MESSAGE_TYPE}
)
#: What a consumer sends when the server drains (``tether.drain``): the client should reconnect after a delay.
_DRAIN_CLOSE: Message = {"type": "websocket.close", "code": SERVICE_RESTART, "reason": "server restarting"}


def _is_websocket_disconnect(message: Message) -> bool:
    return message.get("type") == "websocket.disconnect"


def _is_lifecycle(message: Message) -> bool:
    return message.get("type") in _LIFECYCLE_TYPES


def _drain_close_failed(consumer: AsyncConsumer, error: Exception) -> None:
    """The drain's close could not be sent: the connection was refused, closed or gone already, which is fine."""
    logger.debug("%s: no close for the drain, the connection had ended (%s).", name_that_thing(consumer), error)


def _handled_failure(consumer: AsyncConsumer, message: Message, error: Exception) -> bool:
    """Log a handler's exception. ``True`` when it is the quiet end of a send to a client that has gone away.

    ASGI servers raise an ``OSError`` subclass (uvicorn's ``ClientDisconnected``) from ``send`` once the client has
    disconnected; the disconnect event is on its way, so the handler just ends and the connection ends with it.
    """
    if isinstance(error, OSError) and (
        consumer._client_gone or (consumer._outbox is not None and consumer._outbox.client_gone)
    ):
        logger.debug(
            "%s: the client went away while a %r message was handled; the handler ends.",
            name_that_thing(consumer),
            message["type"],
        )
        return True
    logger.exception(
        "%s raised while handling a %r message; the connection ends.", name_that_thing(consumer), message["type"]
    )
    return False


def _stall_timeout() -> float:
    """Seconds a WebSocket client may take nothing while frames wait for it: the keepalive's verdict on a dead peer."""
    return ws_ping_interval() + ws_ping_timeout()


def _check_outbound_options(cls: type[AsyncConsumer], initkwargs: dict[str, Any]) -> None:
    """Refuse a bad ``slow_client_policy`` or ``outbound_queue_size`` when the application is built."""
    policy = initkwargs.get("slow_client_policy", cls.slow_client_policy)
    if policy is not None:
        check_slow_client_policy(policy, f"{cls.__name__}.slow_client_policy")
    size = initkwargs.get("outbound_queue_size", cls.outbound_queue_size)
    if size is not None and (type(size) is not int or size <= 0):
        raise ValueError(
            f"{cls.__name__}.outbound_queue_size must be a positive number of messages, or None for "
            f"TETHER_OUTBOUND_QUEUE_SIZE, not {size!r}."
        )


class _LayerChannel:
    """A consumer's channel on its layer as a message source: calling it receives. Where the layer can watch the
    channel (``BaseChannelLayer.watch``), a lazy source (``tether.dispatch.LazySource``): read only once a message
    was sent to it, which it keeps until then."""

    __slots__ = ("layer", "name", "start")

    def __init__(self, layer: BaseChannelLayer, name: str) -> None:
        self.layer = layer
        self.name = name
        self.start: Callable[[_LayerChannel], None] | None = None

    def __call__(self) -> Awaitable[Message]:
        return self.layer.receive(self.name)

    def arm(self, start: Callable[[_LayerChannel], None]) -> None:
        self.start = start
        if not self.layer.watch(self.name, self.ready):
            self.start = None
            asyncio.get_running_loop().call_soon(start, self)  # the layer cannot tell: read it from now on

    def ready(self) -> None:
        start, self.start = self.start, None
        if start is not None:
            start(self)

    def disarm(self) -> None:
        self.start = None
        self.layer.unwatch(self.name)


class AsyncConsumer:
    """The base consumer for asyncio code: handlers are ``async def`` methods named after message types.

    Subclass it and route ``MyConsumer.as_asgi()``. ``channel_layer_alias`` picks the layer from ``CHANNEL_LAYERS``.
    ``max_concurrency``, ``concurrency_key`` and ``cancel_on_disconnect`` control how messages are dispatched, and
    ``slow_client_policy``, ``outbound_queue_size`` and ``conflate_key`` what happens to a WebSocket client that
    reads slower than it is sent to (docs/limits.md).
    """

    _sync: ClassVar[bool] = False
    channel_layer_alias: ClassVar[str] = DEFAULT_CHANNEL_LAYER
    #: How many messages may be handled at once. Above 1, each handler runs in a task of its own and handlers may
    #: overlap (except the connection's connect and disconnect, which run alone); see ``concurrency_key``.
    max_concurrency: ClassVar[int] = 1
    #: A WebSocket disconnect cancels the handlers still running (and skips messages not yet started), so a slow
    #: handler never keeps a dead connection alive. ``False`` keeps Channels' way: the disconnect waits its turn.
    #: Sync consumers always wait: their handlers run in a thread, which cannot be cancelled.
    cancel_on_disconnect: ClassVar[bool] = True
    #: What happens when a WebSocket client reads slower than it is sent to and ``outbound_queue_size`` messages
    #: wait: ``"disconnect"`` (close with 4008), ``"drop_oldest"`` or ``"conflate"`` (see ``conflate_key``).
    #: ``None`` means the project's ``TETHER_SLOW_CLIENT_POLICY`` (``"disconnect"`` by default).
    slow_client_policy: ClassVar[str | None] = None
    #: How many outgoing messages may wait for a slow WebSocket client; ``None`` means the project's
    #: ``TETHER_OUTBOUND_QUEUE_SIZE`` (256 by default). Messages only wait once the server pushes back.
    outbound_queue_size: ClassVar[int | None] = None

    scope: Scope
    _client_gone: bool = False
    # A WebSocket's outbound queue, while the connection lasts.
    _outbox: Outbox | None = None
    # While metrics are on, what counts this connection's sends (its outbox counts them) and the messages ``dispatch``
    # handles (tether.metrics.observe).
    _send_watcher: SendWatcher | None = None
    _dispatch_watch: ConnectionWatch | None = None
    channel_layer: BaseChannelLayer | None
    channel_name: str
    base_send: Any

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            setattr(self, key, value)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> ASGIApp:
        """An ASGI application that builds one instance of this consumer per connection, with ``initkwargs``.

        When the class keeps tether's ``__init__``, each keyword sets the class attribute of that name on the
        instance, and a keyword that names no attribute is a ``TypeError`` now rather than at the first connection.
        """
        _check_outbound_options(cls, initkwargs)
        if cls.__init__ is AsyncConsumer.__init__:
            unknown = sorted(key for key in initkwargs if not hasattr(cls, key))
            if unknown:
                raise TypeError(
                    f"{cls.__name__}.as_asgi() got keyword(s) {unknown} that are not attributes of the class; "
                    "define them on the class first (as with Django's View.as_view())."
                )

        # While metrics are on, AsyncConsumer's own __call__ (a WebSocket's outbox) and dispatch count in line; a
        # class with either of its own is counted by a wrapper, at a call more per message (tether.metrics.observe).
        counts_sends = cls.__call__ is AsyncConsumer.__call__
        counts_dispatch = cls.dispatch is AsyncConsumer.dispatch

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            consumer = cls(**initkwargs)
            observer = metrics.observer  # None unless TETHER_METRICS: then it counts what the consumer does
            tracer = tracing.tracer  # None unless TETHER_TRACING: then the consumer runs in its connection span
            if observer is None and tracer is None:
                await consumer(scope, receive, send)
                return
            # The observer watches from here rather than from a coroutine of its own around the consumer's, which
            # every wake-up of the connection's task would pass through (tether.metrics.observe).
            connection = (
                None
                if observer is None
                else observer.watch(consumer, scope, send, counts_sends=counts_sends, counts_dispatch=counts_dispatch)
            )
            try:
                if tracer is None:
                    await consumer(scope, receive, connection.send if connection is not None else send)
                else:
                    await tracer.serve(consumer, scope, receive, connection.send if connection is not None else send)
            except BaseException:
                if connection is not None:
                    connection.ended(failed=True)
                raise
            if connection is not None:
                connection.ended(failed=False)

        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        functools.update_wrapper(app, cls, updated=())
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        sources: list[Any] = [receive]
        # The layer's channel and the drain are read only once something arrives on them (tether.dispatch.LazySource):
        # most connections never get either, and a reader waiting on each costs about 1 KiB per connection.
        lazy: list[LazySource] = []
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            channel = _LayerChannel(self.channel_layer, self.channel_name)
            self.channel_receive = channel
            # tether's layers can watch a channel; another project's layer (channels_redis) is read from the start.
            (lazy if hasattr(self.channel_layer, "watch") else sources).append(channel)
        # A WebSocket's sends go through its outbound queue, so that a client that stops reading never blocks the
        # consumer (tether.outbound); the server's send is still called directly while the client keeps up.
        kind = scope.get("type")
        outbox = None
        if kind == "websocket":
            outbox = Outbox(
                send,
                policy=self._slow_client_policy,
                size=self._outbound_queue_size,
                conflate_key=self.conflate_key,
                name=self._log_name,
                stall_timeout=_stall_timeout,
                watcher=self._send_watcher,
            )
            send = outbox.send
            self._outbox = outbox
        self.base_send = async_to_sync(send) if self._sync else send
        # A WebSocket is closed with 1012 when a stopping server drains it (tether.drain), after its handler.
        departure = enter() if kind == "websocket" else None
        if departure is not None:
            lazy.append(departure)
        # A worker's messages may come from a durable channel: those are acknowledged once handled.
        dispatch = self._dispatch_and_settle if kind == "channel" else self.dispatch
        try:
            await await_many_dispatch(
                sources,
                dispatch,
                # A sync handler runs in a thread, which cannot be cancelled (asgiref waits for it to finish).
                interrupts=_is_websocket_disconnect if self.cancel_on_disconnect and not self._sync else None,
                max_concurrency=self.max_concurrency,
                # Read only above one at a time: a method bound here would be kept for the connection's life.
                concurrency_key=self.concurrency_key if self.max_concurrency != 1 else None,
                exclusive=_is_lifecycle,
                lazy=lazy,
            )
        except StopConsumer:
            pass
        finally:
            if departure is not None:
                departure.leave()
            if outbox is not None:
                await outbox.close()

    def concurrency_key(self, message: Message) -> Hashable | None:
        """With ``max_concurrency`` above 1: the key whose messages must be handled one at a time, in order.

        Messages with equal keys never overlap and keep their arrival order; ``None`` (the default, for every
        message) lets a message run beside any other. Override it, for example to keep each chat room's messages in
        order: ``return message.get("room")``. It is called in the dispatch loop, so keep it cheap.
        """
        return None

    def conflate_key(self, message: Message) -> Hashable | None:
        """With ``slow_client_policy = "conflate"``: the key of an outgoing ``websocket.send`` message.

        While the client is behind, a message replaces the waiting one with the same key, so only the latest value
        per key reaches it; ``None`` lets the message wait in line. The default gives every message the same key:
        only the latest message waits. Override it for one value per key, for example a ticker's symbol:
        ``return json.loads(message["text"])["symbol"]``. It is only called for messages that have to wait.
        """
        return "websocket.send"

    def _log_name(self) -> str:
        """The consumer's name in the outbound queue's log lines (a bound method, smaller than a partial)."""
        return name_that_thing(self)

    def _slow_client_policy(self) -> str:
        """The policy, read when the client first falls behind; checked again for a consumer built without
        ``as_asgi()`` (a typo would otherwise pass for ``drop_oldest``)."""
        if self.slow_client_policy is None:
            return slow_client_policy()
        return check_slow_client_policy(self.slow_client_policy, f"{type(self).__name__}.slow_client_policy")

    def _outbound_queue_size(self) -> int:
        return self.outbound_queue_size or outbound_queue_size()

    async def _dispatch_and_settle(self, message: Message) -> None:
        """``dispatch``, then settle a message from a durable channel: acknowledged when the handler returned (or
        stopped the consumer), refused when it raised, so that the layer delivers it again."""
        if type(message) is not Delivery:
            await self.dispatch(message)
            return
        try:
            await self.dispatch(message)
        except StopConsumer:
            await message.ack()
            raise
        except BaseException as exc:
            await message.nack(exc)
            raise
        await message.ack()

    async def dispatch(self, message: Message) -> None:
        """Call the handler for ``message``; a message with no handler is a ``ValueError``.

        An exception from the handler is logged with the consumer's name and the message type, then raised, which
        ends the connection: the server answers HTTP 500 if no response has started, and otherwise drops the
        connection (uvicorn sends no WebSocket close frame, so the client sees 1006). Except when the exception is the
        ``OSError`` that ``send`` met because the client had gone away: then the handler just ends, with a DEBUG line,
        and the disconnect event that the server sends next ends the consumer.
        """
        if TRACE_KEY in message:  # trace context from a process that traces: never for handlers (tether.tracing)
            del message[TRACE_KEY]
        # The handler of a type seen before, without _handler_for's calls (this runs for every message); a new,
        # missing or malformed type, or a missing handler, goes through _handler_for, which says what is wrong.
        try:
            handler = getattr(self, _handler_names[message["type"]])
        except (KeyError, TypeError, AttributeError):
            handler = None
        if handler is None or not callable(handler):
            handler = _handler_for(self, message)
        if has_open_connections():
            await aclose_old_connections()
        watch = self._dispatch_watch
        if watch is None:
            timed = None
        else:
            # Metrics on: ConnectionWatch.histogram_for and the count written out, a call less per message (a
            # wrapper around dispatch cost 7% of a group_send's server CPU); one message in its kind's ``every`` is
            # timed, and stands for the others.
            message_type = message["type"]
            if message_type == "websocket.receive":
                timed = watch.binary if message.get("text") is None else watch.text
            elif message_type in LIFECYCLE_KINDS:
                timed = watch.lifecycle(message)
            else:
                timed = watch.layer
            timed.handled += 1
            if timed.handled % timed.every:
                timed = None
        started = 0.0 if timed is None else perf_counter()
        try:
            await handler(message)
        except StopConsumer:
            raise
        except Exception as error:
            if not _handled_failure(self, message, error):
                raise
        finally:
            if timed is not None:
                timed.observe(perf_counter() - started, timed.every)

    async def tether_drain(self, message: Message) -> None:
        """The server is stopping and it is this connection's turn (``tether.drain``): close with 1012.

        It runs after the handlers before it have finished, so work in progress is not cut off; the client is told to
        come back after a delay (tether.js does, with jitter). Override it to say goodbye first, then call it.
        """
        try:
            await AsyncConsumer.send(self, dict(_DRAIN_CLOSE))
        except (OSError, RuntimeError) as error:
            _drain_close_failed(self, error)

    async def send(self, message: Message) -> None:
        """Send an ASGI event to the client's server.

        On a WebSocket it goes through the connection's outbound queue (``tether.outbound``): it never waits for a
        client that reads slowly; ``slow_client_policy`` decides what happens when too many events wait for one.
        Raises the server's ``OSError`` when the client has gone away; the handler then ends quietly (see
        ``dispatch``) and the disconnect event that follows ends the consumer.
        """
        try:
            await self.base_send(message)
        except OSError:
            self._client_gone = True
            raise


class SyncConsumer(AsyncConsumer):
    """The base consumer for synchronous code: handlers are plain methods, run in Django's thread-sensitive executor.

    The ORM may be used freely in handlers; ``send`` is synchronous. Stale database connections are closed in the
    handler's thread around every handler call.
    """

    _sync: ClassVar[bool] = True

    @database_sync_to_async
    def dispatch(self, message: Message) -> None:  # type: ignore[override]
        if TRACE_KEY in message:  # as in AsyncConsumer.dispatch
            del message[TRACE_KEY]
        handler = _handler_for(self, message)
        try:
            handler(message)
        except StopConsumer:
            raise
        except Exception as error:
            if not _handled_failure(self, message, error):
                raise

    def tether_drain(self, message: Message) -> None:  # type: ignore[override]
        """The server is stopping and it is this connection's turn (``tether.drain``): close with 1012."""
        try:
            SyncConsumer.send(self, dict(_DRAIN_CLOSE))
        except (OSError, RuntimeError) as error:
            _drain_close_failed(self, error)

    def send(self, message: Message) -> None:  # type: ignore[override]
        """Send an ASGI event to the client's server (blocking until the server has taken it, or, on a WebSocket,
        until the outbound queue has: the thread never waits for a slow client).

        Raises the server's ``OSError`` when the client has gone away, which ends the handler quietly.
        """
        try:
            self.base_send(message)
        except OSError:
            self._client_gone = True
            raise
