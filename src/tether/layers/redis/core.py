"""``RedisChannelLayer``: the channel layer for many processes and machines, on Redis lists and sorted sets.

The storage model is in ``storage.py``, the message codec in ``codec.py``, the transport in ``link.py``,
``blocking.py`` and ``endpoints.py``; this module ties them to the layer API. In short: named channels are shared
Redis lists; a process's own channels (``new_channel()``) are served by one receive loop per process that reads the
process's inbox list and routes each message to a local buffer; ``group_send`` encodes a message once and pushes one
frame per process (plus one per named member) in a single script call, and each process fans out in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

from tether.exceptions import ChannelFull
from tether.layers.redis.base import LoopState, RedisLayerBase
from tether.layers.redis.blocking import ListPop
from tether.layers.redis.codec import TO_CHANNEL, TO_GROUP
from tether.layers.redis.config import require_number
from tether.layers.redis.failures import Outage
from tether.layers.redis.member_lists import MemberLists
from tether.layers.redis.reader_task import PREFETCH_WINDOW, Prefetch, ReaderTask
from tether.layers.redis.storage import (
    GIVE_BACK,
    GROUP_ADD,
    GROUP_DISCARD,
    GROUP_MEMBERS,
    GROUP_RESYNC,
    GROUP_SEND,
    PROCESS_ENTRY,
    PUSH_INBOX,
    SEND_LOCAL,
    SEND_NAMED,
    Script,
    client_id_of,
    frame_head,
    now_ms,
    pack_frame,
)
from tether.types import Message

__all__ = ["PREFETCH_WINDOW", "RedisChannelLayer"]


logger = logging.getLogger("tether.layers.redis")

_INBOX_BATCH = 1000


class RedisChannelLayer(RedisLayerBase["ListLoopState"]):
    """A channel layer on Redis, for several processes and machines; channels_redis's options and meanings.

    ``hosts``: Redis URLs (``redis://``, ``rediss://``, ``unix://``), ``(host, port)`` pairs, or dicts of connection
    options (``address``, ``password``, ``db``, ``ssl_*``...; ``sentinels`` + ``master_name`` for Sentinel;
    ``cluster: True`` for Redis Cluster). Several hosts shard channels and groups by consistent hashing.
    ``prefix`` namespaces every key. ``expiry`` (s) bounds how long a message waits unread; ``group_expiry`` (s) how
    long a membership lasts; ``capacity`` / ``channel_capacity`` bound each channel. ``symmetric_encryption_keys``
    encrypts messages at rest (the first key encrypts, all decrypt) and also protects where they go and for how long:
    each message is sealed for its channel or group, group members are stored with a tag made with the key, and a
    receiving process refuses what was re-targeted, re-labelled, replayed late or added by someone without the key
    (``storage.py`` has the format and the threat model).

    tether-only options: ``unavailable_timeout`` (s, default 5): how long an operation waits for an unreachable Redis
    before raising ``LayerUnavailable``; ``max_message_size`` (bytes, default 8 MiB): larger messages raise
    ``MessageTooLarge``; ``inbox_capacity`` (default 10,000): messages in transit to one process before senders get
    ``ChannelFull`` (its receive loop is stuck or gone); ``random_prefix_length`` (default 12) of the client id;
    ``prefetch`` (default 64; 1 turns it off): the most messages one pop of a named channel takes for this process's
    receivers. The reader takes only as many as the receivers here get through in about 10 ms (it learns that from
    how fast they come back), so a slow worker takes one at a time; what is left unreceived goes back to the list
    when the reader stops or the layer closes.

    ``stats()`` counts: ``sent``/``received`` channel messages; ``group_sent`` group sends; ``group_delivered``
    group messages handed to this process's channels; ``group_full_drops`` members skipped because their channel or
    their process's inbox was full; ``full_drops`` messages for this process's channels that arrived full;
    ``expired`` messages found past their expiry; ``group_members_expired`` memberships older than ``group_expiry``;
    ``decode_errors`` stored data that could not be decoded or decrypted; ``reconnects`` times a receive loop lost
    Redis; ``prefetch_returned`` messages taken ahead and given back to Redis unreceived, ``prefetch_lost`` those
    that could not be given back (Redis was unreachable); ``group_members_unreadable`` group messages dropped
    because this process had to ask Redis for its member list (the frame carrying it expired unread) and could not;
    ``unknown_channel_drops`` messages for channels this process does not have (never made by its ``new_channel()``,
    or gone for ``expiry``: see ``own_channels.py``), never buffered. Encrypting, ``refused_misrouted`` messages found
    in a channel or group other than the one they were sealed for, ``refused_stale`` messages older than ``expiry``
    plus ``SEAL_MARGIN`` seconds, ``refused_members`` group members without a valid membership tag. Each drop is also
    logged once per channel or group.
    """

    extra_options: ClassVar[str] = ", inbox_capacity and prefetch"
    counters: ClassVar[tuple[str, ...]] = (
        *RedisLayerBase.counters,
        "prefetch_returned",
        "prefetch_lost",
        "group_members_unreadable",
        "redelivered",
        "dead_lettered",
    )

    def __init__(self, hosts: Any = None, *, inbox_capacity: int = 10_000, prefetch: int = 64, **options: Any) -> None:
        super().__init__(hosts, **options)
        self.inbox_capacity = require_number("inbox_capacity", inbox_capacity, integer=True)
        self.prefetch = require_number("prefetch", prefetch, integer=True)
        self._one_server = len(self.hosts) == 1 and self.hosts[0].kind != "cluster"
        self._member_lists = MemberLists(self._accept_members, self._local.in_creation_order)

    # Channels ------------------------------------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Send ``message`` to ``channel``. Raises ``ChannelFull`` when the channel is at capacity,
        ``MessageTooLarge`` past ``max_message_size``, ``LayerUnavailable`` when Redis stays unreachable."""
        self.require_valid_channel_name(channel)
        payload = self.codec.encode(message, TO_CHANNEL, channel)
        now = now_ms()
        state = self._loops.get()
        client_id = client_id_of(channel)
        if client_id is None and self.is_durable(channel):
            await self._streams.send(state, channel, pack_frame(now + self._expiry_ms, payload))
        elif client_id is None:
            endpoint = self._endpoint(state, channel)
            sent, trimmed = await endpoint.script(
                SEND_NAMED,
                [self.keys.channel(channel)],
                [self.get_capacity(channel), now, pack_frame(now + self._expiry_ms, payload), self._expiry_ms],
            )
            if trimmed:
                self._expire(channel, trimmed)
            if not sent:
                raise ChannelFull(f"Channel {channel!r} holds {self.get_capacity(channel)} messages already.")
        else:
            if client_id == self.client_id and self._local.queued(channel) >= self.get_capacity(channel):
                raise ChannelFull(f"Channel {channel!r} holds {self.get_capacity(channel)} messages already.")
            endpoint = self._endpoint(state, client_id)
            sent = await endpoint.script(
                SEND_LOCAL,
                [self.keys.inbox(client_id), self.keys.full(client_id)],
                [
                    channel,
                    self.inbox_capacity,
                    pack_frame(now + self._expiry_ms, payload, "", channel),
                    self._expiry_ms,
                ],
            )
            if sent == 0:
                raise ChannelFull(f"Channel {channel!r} holds {self.get_capacity(channel)} messages already.")
            if sent < 0:
                raise ChannelFull(
                    f"The process that owns channel {channel!r} has {self.inbox_capacity} messages waiting unread "
                    "(inbox_capacity): it is stuck or gone."
                )
        self._stats.incr("sent")

    # Groups --------------------------------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (again: renews the membership for another ``group_expiry`` seconds)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._require_not_durable(group, channel)
        member = self.codec.member_entry(group, channel)
        keys, entry = self._group_keys(group, channel, member)
        # Encrypting, the member is stored tagged (storage.py); its other forms go, so it is never there twice.
        others = [form for form in self.codec.member_forms(group, channel) if form != member]
        endpoint = self._endpoint(self._loops.get(), group)
        await endpoint.script(GROUP_ADD, keys, [now_ms(), member, self._group_expiry_ms, entry, *others])

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        forms = self.codec.member_forms(group, channel)
        keys, entry = self._group_keys(group, channel, forms[0])
        endpoint = self._endpoint(self._loops.get(), group)
        await endpoint.script(GROUP_DISCARD, keys, [entry, *forms])

    def _group_keys(self, group: str, channel: str, member: str) -> tuple[list[str], str]:
        """The keys a membership of ``channel`` (stored as ``member``) touches, and its entry in the group's index."""
        client_id = client_id_of(channel)
        if client_id is None:
            return [self.keys.group(group)], member
        keys = [self.keys.group(group), self.keys.group_members(group, client_id), self.keys.group_tokens(group)]
        return keys, PROCESS_ENTRY + client_id

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every member of ``group``: encoded once, one frame per process holding members.

        Members whose channel (or whose process's inbox) is full are skipped, counted in ``stats()`` and logged once.
        """
        self.require_valid_group_name(group)
        payload = self.codec.encode(message, TO_GROUP, group)
        await self.send_to_group_with(group, payload, GROUP_SEND, GROUP_MEMBERS)

    async def send_to_group_with(
        self,
        group: str,
        head: bytes,
        one_server: Script,
        sharded: Script,
        keys: Sequence[str] = (),
        args: Sequence[Any] = (),
        tail: Callable[[list[Any]], bytes] | None = None,
    ) -> list[Any]:
        """``group_send`` of a message that a script writes beside the group and completes (``tether.streams``
        keeps its history so: one call, the message encoded once). Returns the script's replies after the fan-out's.

        On one server, ``one_server`` runs ``GROUP_SEND``'s fan-out (``GROUP_FAN_OUT``) in the same call: its KEYS are
        the group index and token hash, then ``keys``; its ARGV are ``GROUP_SEND``'s with ``head`` (the start of the
        encoded message) at 5, then ``args``; its reply is ``GROUP_SEND``'s followed by its own. Sharded or on a
        cluster, ``sharded`` walks the group (``GROUP_WALK``) with KEYS the group index then ``keys``, ARGV the cutoff
        then ``args``, and replies as ``GROUP_MEMBERS`` then its own; the frames are pushed from here. The message is
        ``head`` followed by ``tail(the script's own replies)`` (the same bytes the script appended, if any).
        """
        state = self._loops.get()
        now = now_ms()
        expires_at = now + self._expiry_ms
        endpoint = self._endpoint(state, group)
        key = self.keys.group(group)
        cutoff = now - self._group_expiry_ms
        if self._one_server:
            expired, _pushed, full, named, *extra = await endpoint.script(
                one_server,
                [key, self.keys.group_tokens(group), *keys],
                [
                    cutoff,
                    self.keys.inbox_prefix,
                    self.inbox_capacity,
                    frame_head(expires_at, group),
                    head,
                    self._expiry_ms,
                    now,
                    self._group_expiry_ms,
                    *args,
                ],
            )
            payload = head if tail is None else head + tail(extra)
            full = [client_id.decode("ascii") for client_id in full]
        else:
            expired, client_ids, lists, named, *extra = await endpoint.script(sharded, [key, *keys], [cutoff, *args])
            by_process = {
                client_id.decode("ascii"): members.decode("ascii")
                for client_id, members in zip(client_ids, lists, strict=True)
            }
            payload = head if tail is None else head + tail(extra)
            full = await self._push_to_processes(state, group, by_process, expires_at, payload)
        named = [name.decode("ascii") for name in named]
        self._stats.incr("group_sent")
        if expired:
            self._stats.incr("group_members_expired", expired)
        for client_id in full:
            self._stats.drop(
                "group_full_drops",
                group,
                "group_send to %r skipped the members in process %r: its inbox holds %d messages (inbox_capacity)",
                group,
                client_id,
                self.inbox_capacity,
            )
        if named:
            await self._group_send_named(state, group, named, now, expires_at, payload)
        return list(extra)

    async def _push_to_processes(
        self, state: ListLoopState, group: str, by_process: dict[str, str], expires_at: int, payload: bytes
    ) -> list[str]:
        """Push one frame to each process's inbox (``by_process``: client id -> its members, comma-separated);
        returns the client ids whose inbox was full."""
        client_ids = list(by_process)
        results = await asyncio.gather(
            *(
                self._endpoint(state, client_id).script(
                    PUSH_INBOX,
                    [self.keys.inbox(client_id)],
                    [
                        self.inbox_capacity,
                        pack_frame(expires_at, payload, group, by_process[client_id]),
                        self._expiry_ms,
                    ],
                )
                for client_id in client_ids
            )
        )
        return [client_id for client_id, pushed in zip(client_ids, results, strict=True) if not pushed]

    async def _group_send_named(
        self, state: ListLoopState, group: str, entries: list[str], now: int, expires_at: int, payload: bytes
    ) -> None:
        """Push a frame to each named-channel member (``entries``: as stored). Encrypting, only to members whose
        tag holds, each frame naming its member's tagged entry for the worker that pops it to check."""
        if self.codec.encrypted:
            members = self._tagged_members(group, entries)
            named = [channel for channel, _ in members]
            frames = [pack_frame(expires_at, payload, group, entry) for _, entry in members]
        else:
            named = entries
            frames = [pack_frame(expires_at, payload, group)] * len(named)
        results = await asyncio.gather(
            *(
                self._endpoint(state, channel).script(
                    SEND_NAMED,
                    [self.keys.channel(channel)],
                    [self.get_capacity(channel), now, frame, self._expiry_ms],
                )
                for channel, frame in zip(named, frames, strict=True)
            )
        )
        for channel, (sent, trimmed) in zip(named, results, strict=True):
            if trimmed:
                self._expire(channel, trimmed)
            if not sent:
                self._count_group_full(group, channel)

    # Housekeeping --------------------------------------------------------------------------------------------------

    def group_sizes(self) -> dict[str, int]:
        """How many of this process's channels each group had in the last member list Redis sent it (a group this
        process received nothing for is not listed: counting members here would mean asking Redis per group); read
        by ``tether.status`` once a snapshot, not per message."""
        return self._member_lists.sizes()

    async def flush(self) -> None:
        """Delete every key under this layer's ``prefix`` (``SCAN`` + ``UNLINK``; never ``FLUSHDB``) and drop what
        this process holds. Receivers that are waiting keep waiting."""
        state = self._loops.get()
        for index in range(len(self.hosts)):
            await self._endpoint_at(state, index).delete_matching(self.keys.scan_pattern)
        self._forget_local()
        self._member_lists.clear()

    # Receive loops -------------------------------------------------------------------------------------------------

    def _new_loop_state(self) -> ListLoopState:
        return ListLoopState(len(self.hosts))

    async def _stop_receiving(self, state: ListLoopState) -> None:
        await self._stop_loops(state, state.tasks())
        state.inbox_task = None
        state.readers.clear()

    async def _listen_for_named(self, state: ListLoopState, channel: str) -> None:
        settings = self._durable.settings_for(channel) if self._durable else None
        if settings is not None:
            self._streams.listen(state, channel, settings)
        else:
            self._start_reader(state, channel)

    async def _listen_for_own_channels(self, state: ListLoopState) -> None:
        self._start_inbox(state)

    def _start_inbox(self, state: ListLoopState) -> None:
        if state.inbox_task is None or state.inbox_task.done():
            state.inbox_task = asyncio.get_running_loop().create_task(self._read_inbox(state))

    def _start_reader(self, state: ListLoopState, channel: str) -> None:
        reader = state.readers.get(channel)
        if reader is None or reader.task.done():
            reader = state.readers[channel] = ReaderTask()
            reader.task = asyncio.get_running_loop().create_task(self._read_named(state, channel, reader))
        else:
            reader.wake()

    @contextlib.asynccontextmanager
    async def _popping(self, state: ListLoopState, key: str, shard: str, what: str) -> AsyncIterator[ListPop]:
        """A ``ListPop`` for the list ``key`` (kept on the host of ``shard``) on a blocking connection of its own."""
        async with self._blocking(state, key, shard) as connection:
            yield ListPop(connection, key, self._settings.block_timeout, Outage(self._stats, what))

    async def _read_inbox(self, state: ListLoopState) -> None:
        """The process's one receive loop: pop batches from the inbox and route each frame to local channels."""
        key = self.keys.inbox(self.client_id)
        async with self._popping(state, key, self.client_id, f"the inbox of process {self.client_id!r}") as pop:
            try:
                while not state.closing:
                    frames = await pop(_INBOX_BATCH)
                    if frames is None:
                        continue
                    for data in frames:
                        frame = self._parse(data, None)
                        if frame is None:
                            continue
                        members = None
                        if frame.group:
                            members = self._member_lists.resolve(frame)
                            if members is None and frame.token is not None:
                                members = await self._resync_members(state, frame.group)
                        self._deliver_frame(frame, None, members)
                    self._member_lists.sweep()
                    if not frames:
                        self._local.maybe_sweep()
                        self._own.maybe_forget()
            finally:
                self._stopped_listening_for_own(state)

    async def _read_named(self, state: ListLoopState, channel: str, reader: ReaderTask) -> None:
        """Pop messages from a named channel's list while receivers in this process wait for them.

        It pops only for a waiting receiver (a message popped is this process's to deliver), and stays connected for
        ``block_timeout`` seconds after the last one left, for the next ``receive`` of a worker loop. A pop may take
        a few messages ahead (``prefetch``), as many as this process's receivers get through in about
        ``PREFETCH_WINDOW`` seconds; what is still unreceived when the reader stops goes back to the list's head.
        """
        key = self.keys.channel(channel)
        ahead = Prefetch(min(self.prefetch, self.get_capacity(channel)))
        loop = asyncio.get_running_loop()
        async with self._popping(state, key, channel, f"channel {channel!r}") as pop:
            try:
                while not state.closing:
                    if not self._local.waiting(channel):
                        if not await reader.wait_for_receiver(pop.block) and not self._local.waiting(channel):
                            return
                        continue
                    ahead.asked(loop.time())
                    frames = await pop(ahead.size)
                    if frames is None:
                        continue
                    for data in frames:
                        self._route(data, channel)
                    ahead.popped(len(frames), loop.time())
            finally:
                if state.readers.get(channel) is reader:
                    del state.readers[channel]
                await self._give_back(state, channel)

    async def _give_back(self, state: ListLoopState, channel: str) -> None:
        """Return messages popped ahead that no receiver took to the head of the channel's list, in order."""
        leftovers = self._local.take_all(channel)
        if not leftovers:
            return
        frames = [
            pack_frame(int(expires_at), self.codec.encode(message, TO_CHANNEL, channel))
            for expires_at, message in leftovers
        ]
        try:
            await self._endpoint(state, channel).script(
                GIVE_BACK, [self.keys.channel(channel)], [self._expiry_ms, *frames]
            )
        except Exception as exc:
            self._stats.incr("prefetch_lost", len(frames))
            logger.warning(
                "%d message(s) popped ahead for channel %r were lost: giving them back to Redis failed (%s)",
                len(frames),
                channel,
                exc,
            )
        else:
            self._stats.incr("prefetch_returned", len(frames))

    async def _resync_members(self, state: ListLoopState, group: str) -> list[str]:
        """This process's members of ``group``, asked of Redis when a frame names a member list this process does
        not remember (the frame that carried it expired unread); the next frame carries the list again.

        The answer is the membership now, which may differ from when the message was sent: this path is taken only
        after messages were lost to expiry anyway.
        """
        try:
            members = await self._endpoint(state, group).script(
                GROUP_RESYNC,
                [self.keys.group_members(group, self.client_id), self.keys.group_tokens(group)],
                [self.client_id, now_ms() - self._group_expiry_ms],
            )
        except Exception as exc:
            self._stats.drop(
                "group_members_unreadable",
                group,
                "A message for group %r was dropped: this process's members could not be read from Redis (%s)",
                group,
                exc,
            )
            return []
        return self._member_lists.accepted(group, [member.decode("ascii") for member in members])

    def _channel_back(self) -> None:
        self._member_lists.outdate()

    # Local buffer callbacks ----------------------------------------------------------------------------------------

    def _local_full(self, channel: str, full: bool) -> None:
        """Tell senders in other processes that one of our channels is (no longer) full."""
        if client_id_of(channel) != self.client_id:
            return
        state = self._loops.peek()
        if state is None or state.closing:
            return  # closing: the notice would outlive the connections (the full set expires by itself)
        endpoint = self._endpoint(state, self.client_id)
        key = self.keys.full(self.client_id)
        if full:
            calls = [endpoint.call("SADD", key, channel), endpoint.call("PEXPIRE", key, self._expiry_ms)]
        else:
            calls = [endpoint.call("SREM", key, channel)]
        # Fire and forget for the caller (a buffer filling up must not wait on Redis), but owned by the loop state:
        # close() lets these finish, then cancels what is left.
        for call in calls:
            task = asyncio.ensure_future(call)
            state.background.add(task)
            task.add_done_callback(state.background.discard)
            task.add_done_callback(_ignore_outcome)


class ListLoopState(LoopState):
    """``RedisChannelLayer`` on one event loop: the inbox reader, the named channels' readers, and the blocking
    connection each receive loop waits on, so that ``close()`` can unblock them instead of cutting a connection that
    Redis may be handing a message to."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.inbox_task: asyncio.Task[None] | None = None
        self.readers: dict[str, ReaderTask] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        """Every receive loop running on this loop."""
        readers = [reader.task for reader in self.readers.values()]
        return [task for task in (self.inbox_task, *readers) if task is not None]


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
