"""What both Redis layers share: their options, client id, per-loop endpoints, local buffers and counters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import string
import sys
from asyncio import Future, get_running_loop
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Generic, TypeVar

from tether.layers.base import BaseChannelLayer
from tether.layers.buffers import ChannelBuffers
from tether.layers.durable import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_VISIBILITY_TIMEOUT,
    DeadLetter,
    Delivery,
    DurablePolicy,
)
from tether.layers.redis.blocking import BlockingConnection
from tether.layers.redis.codec import TO_CHANNEL, TO_GROUP, DecodeError, MessageCodec
from tether.layers.redis.config import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_UNAVAILABLE_TIMEOUT,
    parse_hosts,
    require_number,
    require_prefix,
)
from tether.layers.redis.durable_streams import DurableStreams
from tether.layers.redis.endpoints import Endpoint, TransportSettings, open_endpoint, validate_host
from tether.layers.redis.own_channels import OwnChannels
from tether.layers.redis.per_loop import PerLoop
from tether.layers.redis.reader_task import ReaderTask
from tether.layers.redis.sharding import HashRing
from tether.layers.redis.storage import SEAL_MARGIN, Frame, KeySpace, client_id_of, now_ms, parse_frame
from tether.layers.stats import LayerStats
from tether.types import Message

__all__ = ["LoopState", "RedisLayerBase"]

logger = logging.getLogger("tether.layers.redis")

_COMMON_OPTIONS = (
    "hosts, prefix, expiry, group_expiry, capacity, channel_capacity, symmetric_encryption_keys, "
    "random_prefix_length, unavailable_timeout, max_message_size, durable, visibility_timeout, max_attempts, "
    "dead_letter_expiry"
)

#: Seconds a durable channel's dead letters are kept after the last one arrived.
DEFAULT_DEAD_LETTER_EXPIRY = 7 * 86400
#: The most messages a reader takes ahead for this process's receivers (``RedisChannelLayer``'s ``prefetch``).
DEFAULT_PREFETCH = 64


class LoopState:
    """What a Redis layer holds on one event loop, whichever layer it is: an endpoint per host, whether this
    process's own channels are listened for here, and the commands it started without a caller waiting on them.

    Each layer adds what its receiving needs (``core.ListLoopState``, ``pubsub.PubSubLoopState``).
    """

    def __init__(self, size: int) -> None:
        self.endpoints: list[Endpoint | None] = [None] * size
        #: Whether this process's own channels are being listened for on this loop (the inbox read, or subscribed).
        self.own_listening = False
        self.closing = False  # close() has begun: receive loops finish their round and stop
        #: Short commands started without a waiting caller (full-channel notices); close() awaits or cancels them.
        self.background: set[asyncio.Future[Any]] = set()
        #: The blocking connection each receive loop waits on, so that close() can unblock it instead of cutting a
        #: connection that Redis may be handing a message to.
        self.blocking: dict[asyncio.Task[Any], BlockingConnection] = {}
        #: Durable channels' stream readers, and the entries acknowledged but not yet told to Redis.
        self.durable: dict[str, ReaderTask] = {}
        self.acks: dict[str, list[str]] = {}


#: The loop state a layer keeps.
_State = TypeVar("_State", bound=LoopState)


class RedisLayerBase(BaseChannelLayer, Generic[_State]):
    """Options, names and bookkeeping common to ``RedisChannelLayer`` and ``RedisPubSubChannelLayer``."""

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    #: Extra options a subclass accepts, named in the unknown-option error.
    extra_options: ClassVar[str] = ""
    #: Counters ``stats()`` always shows, even at zero.
    counters: ClassVar[tuple[str, ...]] = (
        "sent",
        "received",
        "group_sent",
        "group_delivered",
        "group_full_drops",
        "full_drops",
        "expired",
        "group_members_expired",
        "decode_errors",
        "reconnects",
        "unknown_channel_drops",
        "refused_misrouted",
        "refused_stale",
        "refused_members",
    )

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: dict[Any, int] | None = None,
        symmetric_encryption_keys: Any = None,
        random_prefix_length: int = 12,
        unavailable_timeout: float = DEFAULT_UNAVAILABLE_TIMEOUT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        durable: Any = None,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        dead_letter_expiry: float = DEFAULT_DEAD_LETTER_EXPIRY,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown CONFIG option(s) {sorted(unknown)}; it takes "
                f"{_COMMON_OPTIONS}{self.extra_options}."
            )
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.group_expiry = require_number("group_expiry", group_expiry)
        self.unavailable_timeout = require_number("unavailable_timeout", unavailable_timeout)
        require_number("random_prefix_length", random_prefix_length, integer=True)
        self.prefix = require_prefix(prefix)
        self.hosts = parse_hosts(hosts)
        self.keys = KeySpace(self.prefix)
        self.codec = MessageCodec(
            symmetric_encryption_keys,
            require_number("max_message_size", max_message_size, integer=True),
            max_age=math.ceil(self.expiry) + SEAL_MARGIN,
        )
        self._settings = TransportSettings(unavailable_timeout=float(self.unavailable_timeout))
        for spec in self.hosts:
            validate_host(spec, self._settings)
        self._ring = HashRing([spec.identity for spec in self.hosts])
        self.client_id = "".join(secrets.choice(string.ascii_letters) for _ in range(random_prefix_length))
        self._own_marker = f".{self.client_id}!"  # what only this process's new_channel() names contain
        self._own_loop: asyncio.AbstractEventLoop | None = None  # a loop whose own-channel listener runs
        self._expiry_ms = int(self.expiry * 1000)
        self._group_expiry_ms = int(self.group_expiry * 1000)
        self._stats = LayerStats(logger)
        self._local = ChannelBuffers(
            self.get_capacity,
            self._expire,
            self._local_full,
            clock=now_ms,
            hold=self._expiry_ms,
            sweep_every=min(max(self.expiry / 2, 0.5), 30.0),
        )
        self._own = OwnChannels(self._local.knows, self._own_marker, idle_after=self.expiry)
        self._loops = PerLoop(self._new_loop_state, self._close_state)
        self.prefetch = DEFAULT_PREFETCH
        self._durable = DurablePolicy(durable, visibility_timeout, max_attempts)
        self._streams = DurableStreams(self, require_number("dead_letter_expiry", dead_letter_expiry))
        #: Called with (group, channel) when a group message was not delivered to a channel of this process because
        #: its buffer was full (tether.streams' watch catches such a subscriber up).
        self.group_drop_listeners: list[Callable[[str, str], None]] = []

    # Names ---------------------------------------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new channel name for this process, ``<prefix>.<client id>!<token>``; this process starts listening
        for it now, so group messages for it are kept from the moment it joins a group."""
        if not isinstance(prefix, str):
            raise TypeError(f"new_channel() prefix must be a str, not {type(prefix).__name__}.")
        name = sys.intern(f"{prefix.rstrip('.')}.{self.client_id}!{secrets.token_hex(8)}")
        self.require_valid_channel_name(name)
        self._own.maybe_forget()
        self._own.add(name)
        loop = get_running_loop()
        await self._listen_for_own(self._loops.get(loop), loop)
        return name

    def watch(self, channel: str, callback: Callable[[], None]) -> bool:
        """For this process's own channels (``new_channel()``), whose messages reach its buffers without a receiver;
        a named channel is read from Redis only while a receiver waits, so it cannot be watched."""
        if not (isinstance(channel, str) and self._own_marker in channel and channel in self._own):
            return False
        self._local.watch(channel, callback)
        return True

    def unwatch(self, channel: str) -> None:
        self._local.unwatch(channel)

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on ``channel``. A process-local channel must be one this process made."""
        local = self._local
        loop = get_running_loop()
        # The hot path of every consumer: its own channel, already known here, with this loop's inbox listened to,
        # needs no checks and no listener. (A process-local name with a buffer here is one of this process's:
        # another process's channel never gets one. Looking for the "!" costs a tenth of looking for the client id.)
        listening = loop is self._own_loop and type(channel) is str and "!" in channel
        queued = local.next_or_waiter(channel, loop, True) if listening else None
        own = True
        if queued is None:  # not the hot path after all
            listening = False
            if type(channel) is not str or not local.knows(channel):
                self.require_valid_channel_name(channel)  # names with a local buffer were checked on their way in
            own = self._own_marker in channel
            if not own and client_id_of(channel) is not None:
                raise self._foreign_channel(channel)
            if own and channel not in self._own:
                self._own.add(channel)  # forgotten while nobody received on it (see own_channels.py): back in use
                self._channel_back()
            queued = local.next_or_waiter(channel, loop)
        if isinstance(queued, Future):
            # Nothing here yet: this receiver now waits, and whoever listens to Redis for the channel is told (this
            # process's own channels are listened for once per loop: on the hot path, already).
            try:
                if not listening:
                    if not own:
                        await self._listen_for_named(self._loops.get(loop), channel)
                    elif loop is not self._own_loop:
                        await self._listen_for_own(self._loops.get(loop), loop)
                message = await queued
            except BaseException:
                local.abandon(channel, queued)
                raise
        else:
            message = queued
        self._stats.received += 1
        return message

    async def _listen_for_own(self, state: _State, loop: asyncio.AbstractEventLoop) -> None:
        """Listen for this process's own channels on ``loop`` (once), and let ``receive`` take its hot path there."""
        if not state.own_listening:
            await self._listen_for_own_channels(state)
            state.own_listening = True
        self._own_loop = loop

    def _stopped_listening_for_own(self, state: _State) -> None:
        """A loop's listener for this process's own channels stopped: ``receive`` goes the long way until the next
        one starts."""
        state.own_listening = False
        self._own_loop = None

    async def _listen_for_named(self, state: _State, channel: str) -> None:
        """Make sure messages for the named ``channel`` reach this process's local buffers (a receiver is waiting
        for one)."""
        raise NotImplementedError

    async def _listen_for_own_channels(self, state: _State) -> None:
        """Make sure messages for this process's own (``new_channel()``) channels reach its local buffers."""
        raise NotImplementedError

    def _channel_back(self) -> None:
        """A channel this process had forgotten is received on again: what was checked without it is outdated."""

    def _foreign_channel(self, channel: str) -> ValueError:
        return ValueError(
            f"Channel {channel!r} belongs to another process (made by its new_channel()); only that process can "
            "receive on it."
        )

    # Durable channels ----------------------------------------------------------------------------------------------

    def is_durable(self, channel: str) -> bool:
        """Whether ``channel`` is durable here: named in the ``durable`` option (see ``tether.layers.durable``)."""
        return bool(self._durable) and self._durable.settings_for(channel) is not None

    def _require_not_durable(self, group: str, channel: str) -> None:
        if self.is_durable(channel):
            raise ValueError(
                f"Channel {channel!r} is durable (the layer's durable option), and group messages are delivered at "
                f"most once: a durable channel cannot join group {group!r}. Send to it directly."
            )

    async def ack_delivery(self, delivery: Delivery) -> None:
        await self._streams.ack_delivery(delivery)

    async def nack_delivery(self, delivery: Delivery, error: str | None) -> None:
        await self._streams.nack_delivery(delivery, error)

    async def dead_letters(self, channel: str, limit: int | None = 100) -> list[DeadLetter]:
        """The dead letters of ``channel``, oldest first (at most ``limit``)."""
        self.require_valid_channel_name(channel)
        return await self._streams.dead_letters(channel, limit)

    async def requeue_dead_letters(self, channel: str, limit: int | None = None) -> int:
        """Send ``channel``'s dead letters (the oldest ``limit``, or all) to it again, as new messages; how many."""
        self.require_valid_channel_name(channel)
        return await self._streams.requeue_dead_letters(channel, limit)

    async def purge_dead_letters(self, channel: str) -> int:
        """Delete ``channel``'s dead letters; how many there were."""
        self.require_valid_channel_name(channel)
        return await self._streams.purge_dead_letters(channel)

    # Receive loops -------------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _blocking(self, state: _State, key: str, shard: str) -> AsyncIterator[BlockingConnection]:
        """A blocking connection of the current receive loop's own for ``key`` (kept on the host of ``shard``),
        registered so that ``close()`` can unblock its command instead of cutting the connection."""
        connection = self._endpoint(state, shard).blocking_connection(key)
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("A Redis receive loop must run in a task.")
        state.blocking[task] = connection
        try:
            yield connection
        finally:
            state.blocking.pop(task, None)
            await connection.aclose()

    async def _stop_loops(self, state: _State, tasks: list[asyncio.Task[None]]) -> None:
        """Stop this loop's receive loops: ``tasks`` and the durable channels' readers."""
        tasks = tasks + [reader.task for reader in state.durable.values()]
        state.closing = True
        # A receive loop blocked in a pop is unblocked and stops by itself, routing (or giving back) whatever that
        # pop brought: cancelling it would close a connection that Redis may be handing a message to right then.
        unblocked = [task for task, connection in list(state.blocking.items()) if await connection.unblock()]
        if unblocked:
            await asyncio.wait(unblocked, timeout=min(float(self.unavailable_timeout), 2.0))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        state.durable.clear()

    # Housekeeping --------------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop this event loop's receive loops and close its connections; the layer reconnects if used again."""
        await self._loops.close_current()

    def _new_loop_state(self) -> _State:
        """The state this layer keeps on a new event loop."""
        raise NotImplementedError

    async def _stop_receiving(self, state: _State) -> None:
        """Stop this loop's receive loops (setting ``state.closing`` first, where they look at it), and wait for
        them to finish."""
        raise NotImplementedError

    async def _close_state(self, state: _State) -> None:
        await self._stop_receiving(state)
        # Still closing: no new background command starts from here on (see _local_full), so the ones waited for
        # below are all there are.
        state.closing = True
        self._stopped_listening_for_own(state)
        if state.background:
            pending = list(state.background)
            _, late = await asyncio.wait(pending, timeout=min(float(self.unavailable_timeout), 2.0))
            for task in late:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for endpoint in state.endpoints:
            if endpoint is not None:
                await endpoint.aclose()
        state.endpoints = [None] * len(state.endpoints)
        state.closing = False

    def stats(self) -> dict[str, int]:
        """Counters of what this process's layer did and did not deliver (see the class docs for each name), and
        ``local_channels`` / ``local_queued``: what this process buffers now."""
        counts = dict.fromkeys(self.counters, 0)
        counts.update(self._stats.snapshot())
        counts.update(self._local.sizes())
        return counts

    def _forget_local(self) -> None:
        """Drop every message, buffer and channel this process holds and start every ``stats()`` counter again from
        zero (``flush()``). Receivers that are waiting keep waiting."""
        self._local.clear()
        self._own.clear()
        self._stats.reset()

    # Endpoints -----------------------------------------------------------------------------------------------------

    def _endpoint(self, state: _State, name: str) -> Endpoint:
        return self._endpoint_at(state, self._ring.index_for(name))

    def _endpoint_at(self, state: _State, index: int) -> Endpoint:
        endpoint = state.endpoints[index]
        if endpoint is None:
            endpoint = state.endpoints[index] = open_endpoint(self.hosts[index], self._settings)
        return endpoint

    # Delivery into this process ------------------------------------------------------------------------------------

    def _route(self, data: bytes, channel: str | None, members: list[str] | None = None, group: str = "") -> None:
        """Deliver one stored frame to this process's channels (see ``_deliver_frame``)."""
        frame = self._parse(data, channel)
        if frame is not None:
            self._deliver_frame(frame, channel, members, group)

    def _parse(self, data: bytes, channel: str | None) -> Frame | None:
        """The frame in ``data``; None (counted and logged) when it is not one."""
        try:
            return parse_frame(data)
        except ValueError:
            name = channel or f"process {self.client_id}"
            self._stats.drop("decode_errors", name, "Unreadable data for %r: not a tether frame", name)
            return None

    def _deliver_frame(
        self, frame: Frame, channel: str | None, members: list[str] | None = None, group: str = ""
    ) -> None:
        """Deliver ``frame`` found on the named ``channel`` (its list or topic: to that channel alone, whatever the
        frame names), or to ``members`` (this process's members of the frame's group, already checked), or else to
        the targets the frame names that are this process's channels (see ``own_channels.py``). ``group`` is the
        group the transport says the frame is for (a pub/sub group topic); otherwise the frame's header says.

        Expired, undecodable, refused (misrouted, stale: see ``storage.py``) and unaccepted (full, unknown channel)
        messages are counted and logged."""
        if channel is not None:
            targets = [channel]
        elif members is not None:
            targets = members
        elif frame.group:
            targets = self._accept_members(frame.group, frame.targets)
        else:
            targets = self._own_targets(frame.targets)
        if not targets:
            return
        if frame.expires_at < now_ms():
            for target in targets:
                self._expire(target)
            return
        message = self._decode(frame, channel, targets, group or frame.group)
        if message is None:
            return
        refused = self._local.deliver_many(targets, message, frame.expires_at)
        self._local.maybe_sweep()
        if frame.group:
            self._stats.incr("group_delivered", len(targets) - len(refused))
        for target in refused:
            if frame.group:
                self._count_group_full(frame.group, target)
            else:
                self._stats.drop(
                    "full_drops",
                    target,
                    "A message for channel %r was dropped: it holds %d messages already",
                    target,
                    self.get_capacity(target),
                )

    def _decode(self, frame: Frame, channel: str | None, targets: list[str], group: str) -> Message | None:
        """The message in ``frame``, to be delivered to ``targets``; None (counted and logged) when it cannot be
        read or, encrypted, was sealed for somewhere else or is too old."""
        codec = self.codec
        if not codec.encrypted:
            kind, name = "", ""
        elif group:
            kind, name = TO_GROUP, group
            # A group frame for a named channel names that channel's tagged membership; one naming another was copied.
            if channel is not None and [codec.member_channel(group, entry) for entry in frame.targets] != [channel]:
                self._stats.drop(
                    "refused_misrouted",
                    channel,
                    "A message of group %r was refused on channel %r: it was not sent to that channel's membership",
                    group,
                    channel,
                )
                return None
        else:
            # A direct send is sealed for the channel it was sent to: the named channel, or the frame's one target.
            kind, name = TO_CHANNEL, channel if channel is not None else (targets[0] if len(targets) == 1 else "")
        try:
            return codec.decode(frame.payload, kind, name)
        except DecodeError as exc:
            where = group or targets[0]
            self._stats.drop(exc.counter, where, "A message for %r was dropped: %s", where, exc)
            return None

    def _accept_members(self, group: str, entries: list[str]) -> list[str]:
        """The members of ``group`` to deliver to out of stored member ``entries``: those whose membership tag holds
        (when encrypting; tags stripped) and that are channels of this process. The others are counted and logged
        once per group."""
        members = entries
        if self.codec.encrypted:
            members = [channel for channel, _ in self._tagged_members(group, entries)]
        return self._own_targets(members, group)

    def _tagged_members(self, group: str, entries: list[str]) -> list[tuple[str, str]]:
        """``(channel, entry)`` for each stored member entry of ``group`` whose membership tag holds (encrypting);
        the others are counted in ``refused_members`` and logged once per group."""
        members = []
        for entry in entries:
            channel = self.codec.member_channel(group, entry)
            if channel is not None:
                members.append((channel, entry))
        refused = len(entries) - len(members)
        if refused:
            self._stats.drop(
                "refused_members",
                group,
                "%d member(s) of group %r were refused: their membership tag is missing or not made with "
                "symmetric_encryption_keys (forged, or added by an older release: they must join again)",
                refused,
                group,
                amount=refused,
            )
        return members

    def _own_targets(self, names: list[str], group: str = "") -> list[str]:
        """The channels of this process among ``names``; the others are counted and logged (once per group, or per
        channel for a direct frame), never buffered."""
        accepted = self._own.accept(names)
        unknown = len(names) - len(accepted)
        if unknown:
            name = group or next(iter(set(names).difference(accepted)))
            self._stats.drop(
                "unknown_channel_drops",
                name,
                "%d message(s) for %r were dropped: not channels of this process (never made by its new_channel(), "
                "or gone for longer than expiry)",
                unknown,
                name,
                amount=unknown,
            )
        return accepted

    def deliver_here(self, channel: str, message: Message) -> bool:
        """Put ``message`` in the buffer of ``channel``, a channel received from in this process, without a round
        trip to Redis; False when the buffer is full (nothing is counted or logged: the caller retries)."""
        return not self._local.deliver_many([channel], message, now_ms() + self._expiry_ms)

    def _count_group_full(self, group: str, channel: str) -> None:
        self._stats.group_full_drop(group, channel, self.get_capacity(channel))
        for listener in self.group_drop_listeners:
            listener(group, channel)

    def _expire(self, channel: str, count: int = 1) -> None:
        self._stats.drop(
            "expired", channel, "A message on channel %r expired unread after %ss", channel, self.expiry, amount=count
        )

    def _local_full(self, channel: str, full: bool) -> None:
        """A local buffer reached its capacity or left it; subclasses may tell other processes."""
