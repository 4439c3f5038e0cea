"""The per-channel buffers every layer delivers into (``tether.layers.buffers``), on their own."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Callable

from asgiref.sync import async_to_sync

from tether.layers.buffers import ChannelBuffers
from tether.layers.redis.storage import now_ms


def buffers(capacity: int = 2, clock: Callable[[], float] = now_ms):
    """Buffers of ``capacity`` on ``clock`` (wall-clock ms by default), recording the expired messages' channels and
    the full/not-full reports."""
    expired: list[str] = []
    full: list[tuple[str, bool]] = []
    local = ChannelBuffers(
        lambda channel: capacity,
        expired.append,
        lambda channel, is_full: full.append((channel, is_full)),
        clock=clock,
        hold=60_000,
    )
    return local, expired, full


async def test_a_delivered_message_waits_for_its_receiver():
    local, _, _ = buffers()
    assert local.deliver("a", {"type": "x"}, now_ms() + 1000)
    assert await local.receive("a") == {"type": "x"}


async def test_a_waiting_receiver_gets_the_message_directly():
    local, _, _ = buffers()
    waiting = asyncio.ensure_future(local.receive("a"))
    await asyncio.sleep(0)
    assert local.waiting("a")
    local.deliver("a", {"type": "x"}, now_ms() + 1000)
    assert await waiting == {"type": "x"}
    assert local.sizes() == {"local_channels": 0, "local_queued": 0}


async def test_asking_only_for_a_known_channel_gets_none_and_changes_nothing_for_an_unknown_one():
    local, _, _ = buffers()
    assert local.next_or_waiter("a", None, True) is None
    assert not local.knows("a")


async def test_asking_only_for_a_known_channel_gets_its_queued_message():
    local, _, _ = buffers()
    local.deliver("a", {"type": "x"}, now_ms() + 1000)
    assert local.next_or_waiter("a", None, True) == {"type": "x"}


async def test_sweep_forgets_idle_channels():
    local, _, _ = buffers()
    local.deliver("a", {"type": "x"}, now_ms() + 1000)
    assert await local.receive("a") == {"type": "x"}
    local.sweep()
    assert local._slots == {}


async def test_a_full_buffer_refuses_and_reports_full_then_not_full():
    local, _, full = buffers(capacity=2)
    assert local.deliver("a", {"type": "1"}, now_ms() + 1000)
    assert local.deliver("a", {"type": "2"}, now_ms() + 1000)
    assert not local.deliver("a", {"type": "3"}, now_ms() + 1000)
    assert await local.receive("a") == {"type": "1"}
    assert full == [("a", True), ("a", True), ("a", False)]


async def test_expired_messages_are_skipped_and_reported():
    local, expired, _ = buffers()
    local.deliver("a", {"type": "old"}, now_ms() - 1)
    local.deliver("a", {"type": "new"}, now_ms() + 1000)
    assert await local.receive("a") == {"type": "new"}
    assert expired == ["a"]


async def test_sweep_drops_expired_messages_nobody_took():
    local, expired, _ = buffers()
    local.deliver("gone", {"type": "old"}, now_ms() - 1)
    local.sweep()
    assert expired == ["gone"]
    assert local.sizes()["local_channels"] == 0
    assert local._slots == {}


async def test_a_message_handed_to_a_receiver_cancelled_at_that_moment_goes_back_first_in_line():
    local, _, _ = buffers()
    waiting = asyncio.ensure_future(local.receive("a"))
    await asyncio.sleep(0)
    local.deliver("a", {"type": "first"}, now_ms() + 1000)
    waiting.cancel()  # cancelled after the hand-over, before it ran
    await asyncio.gather(waiting, return_exceptions=True)
    local.deliver("a", {"type": "second"}, now_ms() + 1000)
    assert await local.receive("a") == {"type": "first"}
    assert await local.receive("a") == {"type": "second"}


async def test_a_receiver_on_another_event_loop_is_woken_on_its_own_loop():
    local, _, _ = buffers()
    result: list[dict] = []
    ready = threading.Event()

    async def receive_elsewhere() -> None:
        waiting = asyncio.ensure_future(local.receive("a"))
        await asyncio.sleep(0)
        ready.set()
        result.append(await waiting)

    thread = threading.Thread(target=async_to_sync(receive_elsewhere))
    thread.start()
    assert await asyncio.to_thread(ready.wait, 5)
    local.deliver("a", {"type": "across"}, now_ms() + 1000)
    await asyncio.to_thread(thread.join, 5)
    assert result == [{"type": "across"}]


async def test_take_all_returns_unexpired_messages_oldest_first_and_reports_expired_ones():
    local, expired, full = buffers(capacity=3)
    later = now_ms() + 1000
    local.deliver("a", {"n": 1}, later)
    local.deliver("a", {"n": 2}, now_ms() - 1)
    local.deliver("a", {"n": 3}, later)
    assert local.take_all("a") == [(later, {"n": 1}), (later, {"n": 3})]
    assert expired == ["a"]
    assert full[-1] == ("a", False)
    assert local.take_all("a") == []


async def test_a_message_delivered_from_another_thread_is_never_left_queued_while_its_receiver_waits():
    local, _, _ = buffers(capacity=1000)
    delivered = threading.Thread(target=lambda: [local.deliver("a", {"n": n}, now_ms() + 5000) for n in range(500)])
    delivered.start()
    received = [await asyncio.wait_for(local.receive("a"), 5) for _ in range(500)]
    delivered.join()
    assert [message["n"] for message in received] == list(range(500))


async def test_channels_are_put_in_the_order_their_buffers_were_made_unknown_ones_last():
    local, _, _ = buffers()
    for name in ("first", "second", "third"):
        local.deliver(name, {"type": "x"}, now_ms() + 1000)
    assert local.in_creation_order(["third", "unknown", "first", "second"]) == ["first", "second", "third", "unknown"]


def test_a_receiver_on_another_thread_gets_every_message_once_and_in_order_while_buffers_are_swept():
    # One channel, each message sent a random moment after the last, so deliveries land at every point of the
    # receiver's loop on its own thread: between two waits, while its buffer is swept, while it waits.
    local, _, _ = buffers(capacity=100_000)
    count = 20_000
    received: list[int] = []
    started = threading.Event()

    async def consume() -> None:
        started.set()
        while len(received) < count:
            received.append((await asyncio.wait_for(local.receive("c"), 10))["n"])

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        consumer = threading.Thread(target=lambda: asyncio.run(consume()))
        consumer.start()
        assert started.wait(5)
        pause = random.Random(7)
        for number in range(count):
            local.deliver("c", {"n": number}, now_ms() + 60_000)
            for _ in range(pause.randrange(200)):
                pass
            if number % 100 == 0:
                local.sweep()
        consumer.join(30)
    finally:
        sys.setswitchinterval(switch_interval)
    assert not consumer.is_alive()
    assert received == list(range(count))


class FakeClock:
    """A clock a test moves by hand: expiry is tested without waiting for it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def clocked_buffers(capacity: int):
    """``buffers`` on a clock the test moves."""
    clock = FakeClock()
    local, expired, full = buffers(capacity, clock)
    return local, clock, expired, full


def test_expiry_is_measured_on_the_clock_the_layer_gives():
    local, clock, expired, _ = clocked_buffers(capacity=10)
    local.deliver("a", {"type": "soon"}, clock.now + 1)
    local.deliver("a", {"type": "later"}, clock.now + 100)
    clock.now += 2
    assert local.take("a") == (clock.now + 98, {"type": "later"})
    assert expired == ["a"]


def test_a_full_channel_makes_room_by_dropping_its_expired_messages_first():
    local, clock, expired, _ = clocked_buffers(capacity=1)
    assert local.deliver("a", {"type": "old"}, clock.now + 1)
    clock.now += 2
    assert local.deliver("a", {"type": "new"}, clock.now + 1)
    assert expired == ["a"]
    assert local.take("a") == (clock.now + 1, {"type": "new"})


def test_sweep_forgets_idle_channels_and_names_them():
    local, clock, _, _ = clocked_buffers(capacity=10)
    local.deliver("a", {"type": "x"}, clock.now + 1)
    local.deliver("b", {"type": "y"}, clock.now + 100)
    clock.now += 2
    assert local.sweep() == ["a"]
    assert list(local.names()) == ["b"]


def test_a_full_channel_whose_expired_messages_make_room_reports_it_is_full_no_longer():
    local, clock, _, full = clocked_buffers(capacity=2)
    local.deliver("a", {"type": "old"}, clock.now + 1)
    local.deliver("a", {"type": "old"}, clock.now + 1)
    clock.now += 2
    assert local.deliver("a", {"type": "new"}, clock.now + 1)
    assert full == [("a", True), ("a", False)]


def test_clearing_a_full_channel_reports_it_is_full_no_longer():
    local, clock, _, full = clocked_buffers(capacity=1)
    local.deliver("a", {"type": "x"}, clock.now + 1)
    local.clear()
    assert full == [("a", True), ("a", False)]
