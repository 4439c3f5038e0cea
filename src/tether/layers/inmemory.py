"""The in-memory channel layer: one process, no dependencies; the default for development and tests.

Delivery is direct: a message for a channel that has a receiver waiting is handed to that receiver's future at once,
and ``group_send`` walks the group's members in one loop. No task is started per message or per member.

The per-channel queues and waiting receivers are ``ChannelBuffers`` (``buffers.py``), the same the Redis layers
deliver into, on the monotonic clock.

Tests written for Channels look into its layer's ``channels`` and ``groups`` dicts. This layer keeps other structures,
so it offers read-only views in Channels' shapes that are computed from its state when read: nothing is kept up to
date on the hot path for them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from asyncio import Future
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, NoReturn

from tether.exceptions import ChannelFull
from tether.layers.base import BaseChannelLayer
from tether.layers.buffers import ChannelBuffers
from tether.layers.durable import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_VISIBILITY_TIMEOUT,
    DeadLetter,
    Delivery,
    DurablePolicy,
    DurableSettings,
    report_dead_letters,
)
from tether.layers.messages import copy_message
from tether.layers.stats import LayerStats
from tether.types import Message

__all__ = ["ChannelQueueView", "InMemoryChannelLayer"]

logger = logging.getLogger("tether.layers.inmemory")


class InMemoryChannelLayer(BaseChannelLayer):
    """A channel layer held in this process's memory.

    It cannot reach other processes: use the Redis layer for several workers or machines. Messages expire after
    ``expiry`` seconds unread, and a channel whose message expired is taken out of its groups (its consumer is gone);
    group memberships expire after ``group_expiry`` seconds. A channel holds at most ``capacity`` messages (or what
    ``channel_capacity`` sets for its name); ``send`` then raises ``ChannelFull`` and ``group_send`` skips the member,
    counting the drop in ``stats()`` and logging it once per channel.

    For tests, ``channels`` and ``groups`` show the layer's state in the shapes of Channels' in-memory layer (see
    their docstrings); they are read-only views, not the layer's own structures.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: dict[Any, int] | None = None,
        durable: Any = None,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(
                f"InMemoryChannelLayer got unknown CONFIG option(s) {sorted(kwargs)}; it takes expiry, "
                "group_expiry, capacity, channel_capacity, durable, visibility_timeout and max_attempts."
            )
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        if not isinstance(group_expiry, (int, float)) or isinstance(group_expiry, bool) or group_expiry <= 0:
            raise ValueError(f"group_expiry must be a positive number of seconds, not {group_expiry!r}.")
        self.group_expiry = group_expiry
        self._groups: dict[str, dict[str, float]] = {}  # group -> {channel: joined at}
        self._memberships: dict[str, set[str]] = {}  # channel -> groups, to drop a dead channel everywhere
        self._stats = LayerStats(logger)
        self._sweep_every = min(1.0, expiry / 2, group_expiry / 2)
        self._next_sweep = time.monotonic() + self._sweep_every
        self._buffers = ChannelBuffers(
            self.get_capacity, self._expire, clock=time.monotonic, hold=expiry, sweep_every=self._sweep_every
        )
        self._durable = DurablePolicy(durable, visibility_timeout, max_attempts)
        self._any_durable = bool(self._durable)  # asked on every receive: an attribute, not DurablePolicy.__bool__
        self._dead: dict[str, list[DeadLetter]] = {}
        # The layer measures time on the monotonic clock; the views show wall-clock times, as Channels' layer holds.
        # One offset per layer keeps the times a view shows stable from one read to the next.
        self._wall_offset = time.time() - time.monotonic()
        #: How many times ``flush()`` emptied the layer: what is kept beside it (streams' history) compares this to
        #: know that it was flushed too.
        self.generation = 0

    # Inspection, for tests ---------------------------------------------------------------------------------------

    @property
    def channels(self) -> Mapping[str, ChannelQueueView]:
        """Each channel that holds messages or has a receiver waiting, to a read-only view of its queue.

        As in Channels, ``layer.channels[name]`` answers ``qsize()``, ``empty()``, ``full()`` and ``maxsize``, and
        ``get_nowait()`` takes the next message as ``(expires_at, message)`` (wall-clock time). A drained channel is
        not listed. Every read first runs the expiry sweep, so expired messages are never shown (and a channel they
        expired on has left its groups, as the layer would do at its next send).
        """
        return _ChannelsView(self)

    @channels.setter
    def channels(self, value: object) -> NoReturn:
        raise AttributeError(
            "InMemoryChannelLayer.channels is a read-only view of the layer's state: empty the layer with "
            "'await layer.flush()', or build a new InMemoryChannelLayer."
        )

    @property
    def groups(self) -> Mapping[str, Mapping[str, float]]:
        """Each group to a read-only view of its members: channel name to the wall-clock time it joined.

        The shape of Channels' ``groups`` dict. A group whose last member left or expired is not listed; every read
        first runs the expiry sweep, so expired memberships are never shown.
        """
        return _GroupsView(self)

    @groups.setter
    def groups(self, value: object) -> NoReturn:
        raise AttributeError(
            "InMemoryChannelLayer.groups is a read-only view of the layer's state: change it with "
            "'await layer.group_add(group, channel)' or 'await layer.group_discard(group, channel)', or empty the "
            "layer with 'await layer.flush()'."
        )

    def _clean_expired(self) -> None:
        """Drop expired messages and memberships now. Kept for compatibility with Channels' layer.

        Channels calls its method of this name on receive and group_send; tether does not (it sweeps on its own
        schedule), so a test set-up that replaces or wraps it, as channels-graphql-ws's ``conftest.py`` does, changes
        nothing in how this layer works, and calling it runs the sweep at once.
        """
        self._sweep(time.monotonic())

    def _remove_from_groups(self, channel: str) -> None:
        """Take ``channel`` out of every group it is in. Kept for compatibility with Channels' layer, like
        ``_clean_expired``: the layer calls it when a message on ``channel`` expires."""
        for group in list(self._memberships.get(channel, ())):
            self._leave(group, channel)

    # Channels ----------------------------------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        self.require_valid_channel_name(channel)
        message = copy_message(message)
        now = time.monotonic()
        self._maybe_sweep(now)
        if not self._buffers.deliver(channel, message, now + self.expiry):
            raise ChannelFull(f"Channel {channel!r} holds {self.get_capacity(channel)} messages already.")
        self._stats.incr("sent")

    async def receive(self, channel: str) -> Message:
        buffers = self._buffers
        # Every channel with a buffer was checked on its way in: only a new one has its name checked here.
        queued = buffers.next_or_waiter(channel, None, True) if type(channel) is str else None
        if queued is None:
            self.require_valid_channel_name(channel)
            queued = buffers.next_or_waiter(channel)
        # The wait is written out rather than through ``await buffers.receive(channel)``: that coroutine's frame cost
        # 4.80M instead of 4.29M instructions to wake a group of 200 (callgrind, the same run).
        if isinstance(queued, Future):
            waiter = queued
            try:
                message = await waiter
            except BaseException:
                buffers.abandon(channel, waiter)  # a message handed over as we were cancelled goes back first
                raise
        else:
            message = queued
        self._stats.received += 1
        if self._any_durable and (settings := self._durable.settings_for(channel)) is not None:
            return self._delivered(channel, message, settings)
        return message

    async def new_channel(self, prefix: str = "specific.") -> str:
        name = f"{prefix.rstrip('.')}.inmemory!{secrets.token_hex(8)}"
        self.require_valid_channel_name(name)
        return name

    def watch(self, channel: str, callback: Callable[[], None]) -> bool:
        self._buffers.watch(channel, callback)
        return True

    def unwatch(self, channel: str) -> None:
        self._buffers.unwatch(channel)

    # Durable channels --------------------------------------------------------------------------------------------

    def is_durable(self, channel: str) -> bool:
        """Whether ``channel`` is durable here: named in the ``durable`` option (see ``tether.layers.durable``)."""
        return bool(self._durable) and self._durable.settings_for(channel) is not None

    def _delivered(self, channel: str, message: Message, settings: DurableSettings) -> Delivery:
        """A message of a durable channel, handed to a receiver: watched until it is settled or times out."""
        if type(message) is Delivery:  # delivered before, and put back
            delivery = message
            delivery.attempts += 1
            delivery._settled = False
        else:
            delivery = Delivery(message, channel, None, 1, self)
        loop = asyncio.get_running_loop()
        delivery.tag = loop.call_later(settings.visibility_timeout, self._timed_out, delivery, settings)
        return delivery

    async def ack_delivery(self, delivery: Delivery) -> None:
        delivery.tag.cancel()

    async def nack_delivery(self, delivery: Delivery, error: str | None) -> None:
        delivery.tag.cancel()
        settings = self._durable.settings_for(delivery.channel)
        if settings is not None:
            self._retry(delivery, settings, error)

    def _timed_out(self, delivery: Delivery, settings: DurableSettings) -> None:
        if not delivery.settled:
            delivery._settled = True
            self._retry(delivery, settings, None)

    def _retry(self, delivery: Delivery, settings: DurableSettings, error: str | None) -> None:
        """Deliver ``delivery`` again, first in line, or dead-letter it after ``max_attempts``."""
        channel = delivery.channel
        if delivery.attempts >= settings.max_attempts:
            plain = dict(delivery)
            self._dead.setdefault(channel, []).append(DeadLetter(channel, plain, delivery.attempts, error, time.time()))
            report_dead_letters(self._stats, channel, 1, settings, error)
            return
        self._stats.incr("redelivered")
        self._buffers.put_back(channel, delivery, time.monotonic() + self.expiry)

    async def dead_letters(self, channel: str, limit: int | None = 100) -> list[DeadLetter]:
        """The dead letters of ``channel``, oldest first (at most ``limit``)."""
        self.require_valid_channel_name(channel)
        return list(self._dead.get(channel, [])[:limit])

    async def requeue_dead_letters(self, channel: str, limit: int | None = None) -> int:
        """Send ``channel``'s dead letters (the oldest ``limit``, or all) to it again, as new messages; how many.
        Stops at the first that does not fit (``capacity``)."""
        self.require_valid_channel_name(channel)
        dead = self._dead.get(channel, [])
        count = 0
        while dead and (limit is None or count < limit):
            try:
                await self.send(channel, dead[0].message)
            except ChannelFull:
                break
            dead.pop(0)
            count += 1
        if not dead:
            self._dead.pop(channel, None)
        return count

    async def purge_dead_letters(self, channel: str) -> int:
        """Delete ``channel``'s dead letters; how many there were."""
        self.require_valid_channel_name(channel)
        return len(self._dead.pop(channel, []))

    # Groups ------------------------------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._groups.setdefault(group, {})[channel] = time.monotonic()
        self._memberships.setdefault(channel, set()).add(group)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._leave(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        self.require_valid_group_name(group)
        message = copy_message(message)
        now = time.monotonic()
        self._maybe_sweep(now)
        members = self._groups.get(group)
        if not members:
            return
        self._stats.incr("group_sent")
        joined_after = now - self.group_expiry
        live = []
        for channel, joined_at in list(members.items()):
            if joined_at < joined_after:
                self._leave(group, channel)
                self._stats.incr("group_members_expired")
            else:
                live.append(channel)
        refused = self._buffers.deliver_many(live, message, now + self.expiry) if live else []
        for channel in refused:
            self._stats.group_full_drop(group, channel, self.get_capacity(channel))
        self._stats.incr("group_delivered", len(live) - len(refused))

    # Housekeeping ------------------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Drop every message and group. Receivers that are waiting keep waiting, and get later messages."""
        self._groups.clear()
        self._memberships.clear()
        self._buffers.clear()
        self._dead.clear()
        self._stats.reset()
        self.generation += 1

    async def close(self) -> None:
        """Nothing to release: the layer lives in memory."""

    def stats(self) -> dict[str, int]:
        """Counters of what the layer did and did not deliver, and how much it holds now.

        ``sent``/``received`` count channel messages, ``group_sent``/``group_delivered`` group sends and the member
        deliveries they made, ``group_full_drops`` members skipped because their channel was full, ``expired``
        messages that expired unread, ``group_members_expired`` memberships older than ``group_expiry``;
        ``channels`` is how many channels hold messages or have a receiver waiting, ``groups`` how many groups exist.
        """
        counts = {
            "sent": 0,
            "received": 0,
            "group_sent": 0,
            "group_delivered": 0,
            "group_full_drops": 0,
            "expired": 0,
            "group_members_expired": 0,
        }
        counts.update(self._stats.snapshot())
        counts["channels"] = self._buffers.sizes()["local_channels"]
        counts["groups"] = len(self._groups)
        return counts

    def group_sizes(self) -> dict[str, int]:
        """How many members each group has (this layer lives in one process, so these are the whole groups); read by
        ``tether.status`` once a snapshot, not per message."""
        return {group: len(members) for group, members in self._groups.items()}

    # Internals ---------------------------------------------------------------------------------------------------

    def _leave(self, group: str, channel: str) -> None:
        members = self._groups.get(group)
        if members is not None and members.pop(channel, None) is not None and not members:
            del self._groups[group]
        groups = self._memberships.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._memberships[channel]

    def _expire(self, channel: str) -> None:
        """A message on ``channel`` expired unread: its consumer is gone, so it leaves its groups too."""
        self._stats.drop(
            "expired",
            channel,
            "A message on channel %r expired unread after %ss",
            channel,
            self.expiry,
        )
        self._remove_from_groups(channel)

    def _maybe_sweep(self, now: float) -> None:
        if now >= self._next_sweep:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop expired messages (their channels leave their groups), idle channels and expired memberships."""
        self._next_sweep = now + self._sweep_every
        for name in self._buffers.sweep():
            self._stats.forget(name)
        joined_after = now - self.group_expiry
        for group, members in list(self._groups.items()):
            for channel, joined_at in list(members.items()):
                if joined_at < joined_after:
                    self._leave(group, channel)
                    self._stats.incr("group_members_expired")


# Read-only views, for tests ------------------------------------------------------------------------------------------


class _ReadOnlyView(Mapping[str, Any]):
    """A mapping over the layer's state that refuses changes with a message naming the layer call that makes them.

    Each read runs the layer's expiry sweep first, so a view never shows what the layer would no longer deliver.
    """

    __slots__ = ("_layer",)
    _how_to_change: ClassVar[str]

    def __init__(self, layer: InMemoryChannelLayer) -> None:
        self._layer = layer

    def _name(self) -> str:
        raise NotImplementedError

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(f"{self._name()} is a read-only view of the layer's state: {self._how_to_change}")

    __setitem__ = __delitem__ = pop = popitem = clear = update = setdefault = _refuse

    def _swept(self) -> InMemoryChannelLayer:
        self._layer._sweep(time.monotonic())
        return self._layer

    def __repr__(self) -> str:
        return f"<{self._name()}: {dict(self.items())!r}>"


class _ChannelsView(_ReadOnlyView):
    """``InMemoryChannelLayer.channels``: channel name to a view of its queue."""

    __slots__ = ()
    _how_to_change = (
        "send with 'await layer.send(channel, message)', receive with 'await layer.receive(channel)', "
        "empty the layer with 'await layer.flush()'."
    )

    def _name(self) -> str:
        return "InMemoryChannelLayer.channels"

    def __getitem__(self, channel: str) -> ChannelQueueView:
        buffers = self._swept()._buffers
        if not (buffers.queued(channel) or buffers.waiting(channel)):
            raise KeyError(channel)
        return ChannelQueueView(self._layer, channel)

    def __iter__(self) -> Iterator[str]:
        return self._swept()._buffers.names()

    def __len__(self) -> int:
        return int(self._swept()._buffers.sizes()["local_channels"])


class _GroupsView(_ReadOnlyView):
    """``InMemoryChannelLayer.groups``: group name to a view of its members."""

    __slots__ = ()
    _how_to_change = "use 'await layer.group_add(group, channel)' and 'await layer.group_discard(group, channel)'."

    def _name(self) -> str:
        return "InMemoryChannelLayer.groups"

    def __getitem__(self, group: str) -> _MembersView:
        if group not in self._swept()._groups:
            raise KeyError(group)
        return _MembersView(self._layer, group)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._swept()._groups))

    def __len__(self) -> int:
        return len(self._swept()._groups)


class _MembersView(_ReadOnlyView):
    """``InMemoryChannelLayer.groups[group]``: member channel name to the wall-clock time it joined."""

    __slots__ = ("_group",)
    _how_to_change = _GroupsView._how_to_change

    def __init__(self, layer: InMemoryChannelLayer, group: str) -> None:
        super().__init__(layer)
        self._group = group

    def _name(self) -> str:
        return f"InMemoryChannelLayer.groups[{self._group!r}]"

    def _members(self) -> dict[str, float]:
        return self._swept()._groups.get(self._group, {})

    def __getitem__(self, channel: str) -> float:
        return self._members()[channel] + self._layer._wall_offset

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._members()))

    def __len__(self) -> int:
        return len(self._members())


class ChannelQueueView:
    """One channel's messages in ``InMemoryChannelLayer.channels``: the reading half of Channels' ``asyncio.Queue``.

    Channels' layer keeps ``(expires_at, message)`` tuples in a queue per channel; tests read its size or take a
    message from it. This view answers the same calls from the layer's own queue, live: ``qsize()`` after a
    ``receive`` is one less. ``get_nowait()`` takes the message as a receive would (so it counts as received);
    ``put``/``put_nowait``/``get`` are refused with the layer call to use instead.
    """

    __slots__ = ("_channel", "_layer")

    def __init__(self, layer: InMemoryChannelLayer, channel: str) -> None:
        self._layer = layer
        self._channel = channel

    @property
    def maxsize(self) -> int:
        """The channel's capacity, as the ``maxsize`` Channels gives its queue."""
        return self._layer.get_capacity(self._channel)

    def qsize(self) -> int:
        """How many unexpired messages wait on the channel."""
        self._layer._sweep(time.monotonic())
        return self._layer._buffers.queued(self._channel)

    def empty(self) -> bool:
        """True when no unexpired message waits on the channel."""
        return self.qsize() == 0

    def full(self) -> bool:
        """True when the channel holds its capacity: a ``send`` to it would raise ``ChannelFull``."""
        return self.qsize() >= self.maxsize

    def get_nowait(self) -> tuple[float, Message]:
        """Take the next message as ``(expires_at, message)``, expiry in wall-clock time; ``asyncio.QueueEmpty`` if
        there is none."""
        entry = self._layer._buffers.take(self._channel)
        if entry is None:
            raise asyncio.QueueEmpty(f"Channel {self._channel!r} holds no message.")
        self._layer._stats.received += 1
        expires_at, message = entry
        return expires_at + self._layer._wall_offset, message

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"InMemoryChannelLayer.channels[{self._channel!r}] is a read-only view of the channel's queue: send with "
            f"'await layer.send({self._channel!r}, message)' and receive with 'await layer.receive({self._channel!r})'."
        )

    put = put_nowait = get = _refuse

    def __repr__(self) -> str:
        return f"<InMemoryChannelLayer.channels[{self._channel!r}]: {self.qsize()} message(s)>"
