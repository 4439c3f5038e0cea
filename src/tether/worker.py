"""Background workers: serve the ``"channel"`` part of the project's application from named layer channels.

A worker listens on a few plain channel names (``"thumbnails"``, ``"emails"``) of a channel layer that several
processes share (Redis). Each channel name gets one long-running application instance, built with the scope
``{"type": "channel", "channel": name}``; the messages that arrive on that channel are fed to the instance's
``receive`` one after another, so a channel's messages are handled by one consumer, in the order they arrived.
``manage.py runworker`` runs a ``Worker`` for the project's ``ASGI_APPLICATION``.

The hand-over from the layer to the instance is bounded: the worker takes the next message off the layer only when
the instance has room for it, so a slow handler leaves its backlog in the layer, where ``capacity`` and ``expiry``
apply, and not in this process's memory.

``stop()`` ends the worker without losing a message: it interrupts only receives from the layer (a cancelled
receive leaves its message in the layer), lets each instance handle every message the worker already took, and only
then ends the instance; the layer keeps the rest, or gives back what it read ahead when it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from tether.exceptions import LayerUnavailable, StopConsumer
from tether.types import ASGIApp, Message, Scope
from tether.utils import name_that_thing

__all__ = ["Worker"]

logger = logging.getLogger("tether.worker")

#: Messages taken off the layer but not yet received by the channel's application instance, per channel.
_HANDOVER_SIZE = 1

#: How long the worker waits before listening again after the layer reported it was unreachable, at most.
_MAX_RETRY_DELAY = 5.0

#: Seconds ``stop()`` lets the instances finish the messages the worker took, unless told otherwise.
DEFAULT_STOP_TIMEOUT = 10.0

#: Put in an instance's queue after its last message when the worker stops: its ``receive`` raises ``StopConsumer``.
_END: Message = {"type": "tether.worker.end"}


class _ChannelInstance:
    """One channel name's application instance and the queue that feeds its ``receive``."""

    __slots__ = ("channel", "listener", "queue", "receiving", "started", "task")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=_HANDOVER_SIZE)
        self.task: asyncio.Task[None] | None = None
        self.started = 0
        self.listener = asyncio.current_task()
        #: True while the listener waits on the layer, holding no message: the only time stop() may interrupt it.
        self.receiving = False

    async def receive(self) -> Message:
        """The instance's ``receive``: the next message handed over; ``StopConsumer`` after the last one."""
        message = await self.queue.get()
        if message is _END:
            raise StopConsumer
        return message


class Worker:
    """Serve ``channels`` of ``channel_layer`` with ``application`` until cancelled.

    ``application`` is an ASGI application that handles ``"channel"`` scopes, usually the project's
    ``ProtocolTypeRouter`` with a ``"channel": ChannelNameRouter({...})`` entry. ``channels`` are plain channel names
    (no ``!``: a worker channel is shared by every worker process listening on it). Construction raises ``ValueError``
    for an empty list and ``TypeError`` for an invalid name.

    When an instance ends (its handler raised, or it raised ``StopConsumer``), the end is logged and a new instance
    takes over the channel's next messages; a message the old instance had already received but not handled is lost
    with it.

    Two ways to end ``run()``: ``stop()`` is the graceful one (``runworker`` does it on SIGTERM): no new message is
    taken, each instance handles every message the worker already took, then its ``receive`` raises
    ``StopConsumer``; an instance still busy after the timeout is cancelled. Cancelling ``run()`` cancels every
    instance at once.

    Sending from a worker's application raises ``RuntimeError``: there is no client; use the channel layer to answer.

    ``max_applications`` is accepted for Channels' signature: a tether worker runs one application instance per
    channel, so it never holds more instances than it has channels. It must be a positive int.
    """

    def __init__(
        self, application: ASGIApp, channels: Iterable[str], channel_layer: Any, max_applications: int = 1000
    ) -> None:
        if not isinstance(max_applications, int) or isinstance(max_applications, bool) or max_applications < 1:
            raise ValueError(f"max_applications must be a positive int, not {max_applications!r}.")
        self.max_applications = max_applications
        names = list(dict.fromkeys(channels))
        if not names:
            raise ValueError("Worker needs at least one channel name to listen on.")
        validate = getattr(channel_layer, "require_valid_channel_name", None)
        for name in names:
            if validate is not None:
                validate(name)
            elif not isinstance(name, str):
                raise TypeError(f"Channel name must be a str, not {type(name).__name__}: {name!r}.")
            if "!" in name:
                raise TypeError(
                    f"Worker channel {name!r} contains '!', which marks a channel local to one process; give the "
                    "worker a plain name such as 'thumbnails' that any process can send to."
                )
        self.application = application
        self.channels = names
        self.channel_layer = channel_layer
        self._instances: dict[str, _ChannelInstance] = {}
        self._listeners: list[asyncio.Task[None]] = []
        self._stopping = False  # stop() was called: take no more messages
        self._closed = False  # run() is ending: start no more instances

    async def run(self) -> None:
        """Listen on every channel and serve its messages until ``stop()`` ended every instance, or until cancelled;
        then stop every instance.

        Raises what the layer raises from ``receive`` other than ``LayerUnavailable`` (an outage the worker waits
        out, retrying with a growing delay).
        """
        self._stopping = self._closed = False
        listeners = self._listeners = [
            asyncio.create_task(self.listener(channel), name=f"tether-worker-{channel}") for channel in self.channels
        ]
        logger.info("Worker listening on %s.", ", ".join(self.channels))
        try:
            done, _ = await asyncio.wait(listeners, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error
        finally:
            self._stopping = self._closed = True
            tasks = listeners + [instance.task for instance in self._instances.values() if instance.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._instances.clear()
            self._listeners = []

    async def handle(self) -> None:
        """Channels' name for ``run()``."""
        await self.run()

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """End ``run()`` without losing a message: take no more from the layer, let each instance handle the
        messages the worker already took for up to ``timeout`` seconds, then cancel those still busy (logged).

        What is still in the layer stays there for the next worker; close the layer afterwards, so that it gives
        back what it read ahead.
        """
        self._stopping = True
        listeners = [task for task in self._listeners if not task.done()]
        for instance in self._instances.values():
            if instance.receiving and instance.listener is not None:
                instance.listener.cancel()
        if not listeners:
            return
        _, late = await asyncio.wait(listeners, timeout=timeout)
        if late:
            self._closed = True  # what is cancelled now is not restarted
        for task in late:
            logger.warning(
                "The worker was asked to stop, but the instance serving %r was still busy after %.1fs: cancelling it.",
                task.get_name().removeprefix("tether-worker-"),
                timeout,
            )
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)

    async def listener(self, channel: str) -> None:
        """Receive ``channel``'s messages from the layer and hand each to the channel's application instance; when
        the worker stops, let the instance handle what it was given and end."""
        instance = self._instances[channel] = _ChannelInstance(channel)
        try:
            while not self._stopping:
                instance.receiving = True
                try:
                    message = await self._next_message(channel)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    # stop() interrupts a receive this way (the message stays in the layer); any other
                    # cancellation goes on as one.
                    if self._stopping and task is not None and task.uncancel() == 0:
                        break
                    raise
                finally:
                    instance.receiving = False
                await self._hand_over(instance, message)
            await self._end(instance)
        finally:
            if instance.task is not None and not instance.task.done():
                instance.task.cancel()
                await asyncio.gather(instance.task, return_exceptions=True)

    async def _next_message(self, channel: str) -> Message:
        """``channel``'s next message from the layer, waiting out outages with a growing delay."""
        delay = 0.1
        while True:
            try:
                return await self.channel_layer.receive(channel)  # type: ignore[no-any-return]
            except LayerUnavailable as exc:
                logger.warning(
                    "Channel layer unreachable while listening on %r (%s); retrying in %.1fs.", channel, exc, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_DELAY)

    async def _end(self, instance: _ChannelInstance) -> None:
        """Let the instance handle what it was given, then end it through ``StopConsumer``. An instance that ends
        before it took everything is replaced (see ``_restart_for_waiting_messages``), and the wait goes on."""
        put = asyncio.ensure_future(instance.queue.put(_END))
        try:
            while (task := instance.task) is not None and not task.done():
                await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
                if put.done():
                    await asyncio.gather(task, return_exceptions=True)
                    return
        finally:
            if not put.done():
                put.cancel()
                await asyncio.gather(put, return_exceptions=True)

    async def _hand_over(self, instance: _ChannelInstance, message: Message) -> None:
        """Queue ``message`` for the channel's instance, waiting for room; restart the instance if it ends first."""
        while True:
            task = self._ensure_running(instance)
            if not instance.queue.full():
                instance.queue.put_nowait(message)
                return
            put = asyncio.ensure_future(instance.queue.put(message))
            try:
                await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not put.done():
                    put.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await put
            if put.done() and not put.cancelled():
                return

    def _ensure_running(self, instance: _ChannelInstance) -> asyncio.Task[None]:
        """The channel's running application instance: started now if there is none or the last one has ended."""
        task = instance.task
        if task is None or task.done():
            instance.started += 1
            task = instance.task = asyncio.create_task(
                self._run_instance(instance), name=f"tether-worker-app-{instance.channel}"
            )
            task.add_done_callback(lambda _: self._restart_for_waiting_messages(instance))
        return task

    def _restart_for_waiting_messages(self, instance: _ChannelInstance) -> None:
        """An instance ended: start the next one now if messages wait for it, rather than at the next arrival."""
        if not self._closed and not instance.queue.empty():
            self._ensure_running(instance)

    async def _run_instance(self, instance: _ChannelInstance) -> None:
        scope: Scope = {"type": "channel", "channel": instance.channel}
        channel = instance.channel

        async def send(message: Message) -> None:
            raise RuntimeError(
                f"The worker application for channel {channel!r} tried to send {message.get('type')!r}, but a "
                "worker has no client to send to. Send to another channel or group through the channel layer."
            )

        try:
            await self.application(scope, instance.receive, send)
        except StopConsumer:
            pass
        except Exception:
            logger.exception(
                "%s raised while serving channel %r; the next message starts a new instance.",
                name_that_thing(self.application),
                channel,
            )
        else:
            if not self._stopping:
                logger.info("The application for channel %r returned; the next message starts a new instance.", channel)
