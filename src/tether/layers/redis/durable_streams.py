"""Durable channels on ``RedisChannelLayer``: Redis streams read through a consumer group (see ``layers.durable``).

A durable channel's messages wait in the stream ``<prefix>:s:{<name>}``; each process reads it as a consumer (named
by its client id) of the group ``tether``, so a message read is **pending** for that process until it is acknowledged
(``XACK`` and ``XDEL`` in one script), refused (delivered again at once, or dead-lettered) or left too long: every
reader takes over entries pending longer than the visibility timeout (``XAUTOCLAIM``), whoever held them, and their
delivery count is the attempt number. A process reads only while its receivers wait, a few messages ahead at most
(``prefetch``): what it read ahead is pending in Redis, so a crash delays those messages by the visibility timeout
and loses none; on ``close()`` it hands them back at once (claimable, their count as it was).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack

from tether.exceptions import ChannelFull
from tether.layers.durable import DeadLetter, Delivery, DurableSettings, report_dead_letters
from tether.layers.redis.blocking import BlockingConnection
from tether.layers.redis.codec import TO_CHANNEL, DecodeError
from tether.layers.redis.failures import Outage
from tether.layers.redis.reader_task import Prefetch, ReaderTask
from tether.layers.redis.storage import (
    DURABLE_ACK,
    DURABLE_CLAIM,
    DURABLE_GROUP,
    DURABLE_NACK,
    DURABLE_RELEASE,
    DURABLE_SEND,
    now_ms,
    parse_frame,
)

if TYPE_CHECKING:
    from tether.layers.redis.base import LoopState, RedisLayerBase

__all__ = ["CONSUMER_GROUP", "DurableStreams"]

logger = logging.getLogger("tether.layers.redis")

#: The consumer group every process reads durable channels through.
CONSUMER_GROUP = "tether"
#: Most entries one takeover round claims.
_CLAIM_BATCH = 100
#: The type a dead letter's message shows when this layer cannot decode it (another key, corrupt data).
_UNDECODABLE = "tether.undecodable"
#: Seconds acknowledgements wait to be sent together: far below any visibility timeout.
_ACK_DELAY = 0.005
#: Most entries one acknowledgement command names.
_ACK_BATCH = 1000
#: Longest pause between takeover rounds of a reader, in seconds (shorter for short visibility timeouts).
_CLAIM_EVERY = 5.0


class DurableStreams:
    """The durable-channel half of a ``RedisChannelLayer``: sends, the reader loop, settling and dead letters."""

    def __init__(self, layer: RedisLayerBase[Any], dead_letter_expiry: float) -> None:
        self._layer = layer
        self._dead_letter_expiry_ms = int(dead_letter_expiry * 1000)

    # Sending ---------------------------------------------------------------------------------------------------------

    async def send(self, state: LoopState, channel: str, frame: bytes) -> None:
        layer = self._layer
        sent, trimmed = await layer._endpoint(state, channel).script(
            DURABLE_SEND,
            [layer.keys.stream(channel)],
            [layer.get_capacity(channel), now_ms(), frame, layer._expiry_ms, CONSUMER_GROUP],
        )
        if trimmed:
            layer._expire(channel, trimmed)
        if not sent:
            raise ChannelFull(f"Channel {channel!r} holds {layer.get_capacity(channel)} messages already.")

    # Reading ---------------------------------------------------------------------------------------------------------

    def listen(self, state: LoopState, channel: str, settings: DurableSettings) -> None:
        """A receiver waits on ``channel``: start its reader on this loop, or wake it."""
        reader = state.durable.get(channel)
        if reader is None or reader.task.done():
            reader = state.durable[channel] = ReaderTask()
            reader.task = asyncio.get_running_loop().create_task(self._run_reader(state, channel, settings, reader))
        else:
            reader.wake()

    async def _run_reader(self, state: LoopState, channel: str, settings: DurableSettings, reader: ReaderTask) -> None:
        try:
            async with self._layer._blocking(state, self._layer.keys.stream(channel), channel) as connection:
                await self.read(state, channel, settings, connection, reader.wait_for_receiver)
        finally:
            if state.durable.get(channel) is reader:
                del state.durable[channel]

    async def read(
        self,
        state: LoopState,
        channel: str,
        settings: DurableSettings,
        connection: BlockingConnection,
        wait_for_receiver: Callable[[float], Awaitable[bool]],
    ) -> None:
        """Read ``channel`` for this process's waiting receivers until none has waited for ``block_timeout``:
        entries taken over from receivers that did not settle them first, then new ones, a few at a time."""
        layer = self._layer
        key = layer.keys.stream(channel)
        endpoint = layer._endpoint(state, channel)
        outage = Outage(layer._stats, f"durable channel {channel!r}")
        ahead = Prefetch(min(layer.prefetch, layer.get_capacity(channel)))
        loop = asyncio.get_running_loop()
        claim_every = min(settings.visibility_timeout / 2, _CLAIM_EVERY)
        block = layer._settings.block_timeout
        next_claim = 0.0
        try:
            while not state.closing:
                if not layer._local.waiting(channel):
                    if not await wait_for_receiver(block) and not layer._local.waiting(channel):
                        return
                    continue
                try:
                    if loop.time() >= next_claim:
                        next_claim = loop.time() + claim_every
                        claimed, dead = await endpoint.script(
                            DURABLE_CLAIM,
                            [key, layer.keys.dead_letters(channel)],
                            [
                                CONSUMER_GROUP,
                                layer.client_id,
                                int(settings.visibility_timeout * 1000),
                                _CLAIM_BATCH,
                                settings.max_attempts,
                                now_ms(),
                                self._dead_letter_expiry_ms,
                            ],
                        )
                        report_dead_letters(layer._stats, channel, dead, settings)
                        if claimed:
                            layer._stats.incr("redelivered", len(claimed))
                            await self._deliver(state, channel, [(i, f, int(a)) for i, f, a in claimed])
                            continue
                    ahead.asked(loop.time())
                    wait_ms = max(1, int(min(block, claim_every, next_claim - loop.time()) * 1000))
                    reply = await connection.call(
                        "XREADGROUP",
                        "GROUP",
                        CONSUMER_GROUP,
                        layer.client_id,
                        "COUNT",
                        ahead.size,
                        "BLOCK",
                        wait_ms,
                        "STREAMS",
                        key,
                        ">",
                    )
                except Exception as exc:
                    if "NOGROUP" in str(exc) or "no longer exists" in str(exc):
                        # The stream expired or was deleted (or was never sent to): make it and read on.
                        await endpoint.script(DURABLE_GROUP, [key], [CONSUMER_GROUP, layer._expiry_ms])
                        continue
                    await outage.wait(connection.where, exc)
                    continue
                outage.over()
                entries = _stream_entries(reply)
                await self._deliver(state, channel, [(entry_id, frame, 1) for entry_id, frame in entries])
                ahead.popped(len(entries), loop.time())
        finally:
            await self._release(state, channel, settings)

    async def _deliver(self, state: LoopState, channel: str, entries: list[tuple[bytes, bytes, int]]) -> None:
        """Hand entries read from the stream to this process's receivers; the expired and unreadable are dropped
        (counted, logged, and acknowledged so that they do not come round again)."""
        layer = self._layer
        dropped = []
        now = now_ms()
        for raw_id, data, attempt in entries:
            entry_id = raw_id.decode("ascii")
            try:
                frame = parse_frame(data)
            except ValueError as exc:
                layer._stats.drop("decode_errors", channel, "A message for %r was dropped: %s", channel, exc)
                dropped.append(entry_id)
                continue
            if frame.expires_at < now:
                layer._expire(channel)
                dropped.append(entry_id)
                continue
            if frame.group:
                layer._stats.drop(
                    "refused_misrouted", channel, "A group message was refused on durable channel %r", channel
                )
                dropped.append(entry_id)
                continue
            message = layer._decode(frame, channel, [channel], "")  # counted and logged when refused
            if message is None:
                dropped.append(entry_id)
                continue
            # A refusal (the local queue is full) leaves the entry pending: it comes round after the visibility
            # timeout. The reader reads only as much as the waiting receivers take, so this is rare.
            layer._local.deliver(channel, Delivery(message, channel, entry_id, attempt, self), frame.expires_at)
        for entry_id in dropped:
            self._ack(state, channel, entry_id)

    async def _release(self, state: LoopState, channel: str, settings: DurableSettings) -> None:
        """Hand back what was read ahead and never received: claimable by any process at once, attempts unchanged."""
        leftovers = [message for _, message in self._layer._local.take_all(channel) if type(message) is Delivery]
        if not leftovers:
            return
        pairs: list[Any] = []
        for delivery in leftovers:
            pairs += [delivery.tag, delivery.attempts - 1]
        try:
            await self._layer._endpoint(state, channel).script(
                DURABLE_RELEASE,
                [self._layer.keys.stream(channel)],
                [CONSUMER_GROUP, self._layer.client_id, int(settings.visibility_timeout * 1000) + 1, *pairs],
            )
        except Exception as exc:
            logger.warning(
                "%d message(s) read ahead on durable channel %r wait for the visibility timeout (%gs) before another "
                "process takes them: handing them back failed (%s)",
                len(leftovers),
                channel,
                settings.visibility_timeout,
                exc,
            )

    # Settling --------------------------------------------------------------------------------------------------------

    async def ack_delivery(self, delivery: Delivery) -> None:
        self._ack(self._layer._loops.get(), delivery.channel, delivery.tag)

    def _ack(self, state: LoopState, channel: str, entry_id: str) -> None:
        """Acknowledge an entry without waiting for Redis: the acknowledgements made on this loop within
        ``_ACK_DELAY`` go in one command. (A handler awaiting a round trip per message handled a fifth as many jobs
        per second as on a default channel; one command per turn of the loop, a third.) An acknowledgement lost to
        a crash or an outage only means the message is delivered again."""
        pending = state.acks.setdefault(channel, [])
        pending.append(entry_id)
        if len(pending) == 1:
            task = asyncio.ensure_future(self._flush_acks(state, channel))
            state.background.add(task)
            task.add_done_callback(state.background.discard)

    async def _flush_acks(self, state: LoopState, channel: str) -> None:
        await asyncio.sleep(_ACK_DELAY)  # the acknowledgements made meanwhile join the batch
        layer = self._layer
        ids = state.acks.pop(channel, [])
        try:
            for start in range(0, len(ids), _ACK_BATCH):
                await layer._endpoint(state, channel).script(
                    DURABLE_ACK, [layer.keys.stream(channel)], [CONSUMER_GROUP, *ids[start : start + _ACK_BATCH]]
                )
        except Exception as exc:
            layer._stats.drop(
                "ack_failures",
                channel,
                "Acknowledging messages of durable channel %r failed (%s): they will be delivered again",
                channel,
                exc,
            )

    async def nack_delivery(self, delivery: Delivery, error: str | None) -> None:
        layer = self._layer
        channel = delivery.channel
        settings = layer._durable.settings_for(channel)
        if settings is None:
            return
        state = layer._loops.get()
        outcome = await layer._endpoint(state, channel).script(
            DURABLE_NACK,
            [layer.keys.stream(channel), layer.keys.dead_letters(channel)],
            [
                CONSUMER_GROUP,
                layer.client_id,
                delivery.tag,
                settings.max_attempts,
                error or "",
                now_ms(),
                self._dead_letter_expiry_ms,
            ],
        )
        if not outcome:
            return
        if outcome[0] == 0:
            report_dead_letters(layer._stats, channel, 1, settings, error)
            return
        layer._stats.incr("redelivered")
        frame = parse_frame(outcome[1])
        again = Delivery(dict(delivery), channel, delivery.tag, int(outcome[2]), self)
        layer._local.put_back(channel, again, frame.expires_at)

    # Dead letters ----------------------------------------------------------------------------------------------------

    async def dead_letters(self, channel: str, limit: int | None) -> list[DeadLetter]:
        layer = self._layer
        state = layer._loops.get()
        stop = -1 if limit is None else limit - 1
        if stop < -1 or limit == 0:
            return []
        records = await layer._endpoint(state, channel).call("LRANGE", layer.keys.dead_letters(channel), 0, stop)
        return [self._dead_letter(channel, record) for record in records]

    def _dead_letter(self, channel: str, record: bytes) -> DeadLetter:
        data, attempts, error, died_at = msgpack.unpackb(record, raw=True)
        try:
            message = self._layer.codec.decode(parse_frame(data).payload, TO_CHANNEL, channel, check_age=False)
        except (ValueError, DecodeError) as exc:
            message = {"type": _UNDECODABLE, "error": str(exc)}
        text = error.decode("utf-8", "replace") if error else None
        return DeadLetter(channel, message, int(attempts), text, died_at / 1000)

    async def requeue_dead_letters(self, channel: str, limit: int | None) -> int:
        layer = self._layer
        state = layer._loops.get()
        endpoint = layer._endpoint(state, channel)
        key = layer.keys.dead_letters(channel)
        count = 0
        while limit is None or count < limit:
            record = await endpoint.call("LPOP", key)
            if record is None:
                break
            letter = self._dead_letter(channel, record)
            if letter.message.get("type") == _UNDECODABLE:
                await endpoint.call("LPUSH", key, record)
                raise ValueError(
                    f"The oldest dead letter of {channel!r} cannot be decoded with this layer's "
                    "symmetric_encryption_keys; purge it, or requeue with the key it was encrypted with."
                )
            try:
                await layer.send(channel, letter.message)
            except Exception:
                await endpoint.call("LPUSH", key, record)  # back where it was; the caller sees why
                raise
            count += 1
        return count

    async def purge_dead_letters(self, channel: str) -> int:
        layer = self._layer
        endpoint = layer._endpoint(layer._loops.get(), channel)
        key = layer.keys.dead_letters(channel)
        count: int = await endpoint.call("LLEN", key)
        await endpoint.call("DEL", key)
        return count


def _stream_entries(reply: Any) -> list[tuple[bytes, bytes]]:
    """``(id, frame)`` of each entry in an ``XREADGROUP`` reply for one stream (a list of ``[key, entries]`` in
    RESP2, a map of key to entries in RESP3; each entry ``[id, [b"f", frame]]``)."""
    if not reply:
        return []
    streams = list(reply.values()) if isinstance(reply, dict) else [stream[1] for stream in reply]
    return [(entry[0], _frame_of(entry[1])) for entries in streams for entry in entries or ()]


def _frame_of(fields: Any) -> bytes:
    if isinstance(fields, dict):
        return bytes(fields[b"f"])
    return bytes(fields[1])
