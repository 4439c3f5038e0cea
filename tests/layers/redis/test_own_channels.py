"""The channels a Redis layer process has (without Redis): what an inbox frame may be delivered to."""

from __future__ import annotations

from tether.layers.redis.own_channels import OwnChannels


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def own_channels(buffers: set[str], clock: Clock, idle_after: float = 10) -> OwnChannels:
    return OwnChannels(buffers.__contains__, ".P!", idle_after=idle_after, clock=clock)


def test_only_channels_made_here_or_with_a_buffer_here_are_accepted():
    buffers = {"specific.P!receiving"}
    own = own_channels(buffers, Clock())
    own.add("specific.P!made")
    names = ["specific.P!made", "specific.P!receiving", "specific.P!made-up", "specific.Q!other", "jobs"]
    assert own.accept(names) == ["specific.P!made", "specific.P!receiving"]


def test_a_named_channel_with_a_buffer_here_is_not_a_process_channel():
    own = own_channels({"jobs"}, Clock())
    assert own.accept(["jobs"]) == []


def test_a_channel_without_a_buffer_at_every_look_for_idle_after_is_forgotten():
    clock, buffers = Clock(), set()
    own = own_channels(buffers, clock)
    own.add("specific.P!gone")
    own.add("specific.P!busy")
    buffers.add("specific.P!busy")
    assert own.forget_idle() == []  # first look without a buffer: the idle time starts
    clock.now += 9.9
    assert own.forget_idle() == []
    clock.now += 0.1
    assert own.forget_idle() == ["specific.P!gone"]
    assert "specific.P!gone" not in own
    assert "specific.P!busy" in own


def test_a_buffer_seen_at_a_look_restarts_the_idle_time():
    clock, buffers = Clock(), set()
    own = own_channels(buffers, clock)
    own.add("specific.P!slow")
    own.forget_idle()
    clock.now += 6
    buffers.add("specific.P!slow")
    own.forget_idle()
    buffers.clear()
    clock.now += 6
    own.forget_idle()
    clock.now += 6
    assert own.forget_idle() == []
    clock.now += 4
    assert own.forget_idle() == ["specific.P!slow"]


def test_looks_happen_every_half_idle_after_at_most():
    clock, buffers = Clock(), set()
    own = own_channels(buffers, clock)
    own.add("specific.P!gone")
    assert own.maybe_forget() == []
    clock.now += 5
    assert own.maybe_forget() == []  # first look
    clock.now += 4.9
    assert own.maybe_forget() == []  # too soon
    clock.now += 5.1
    assert own.maybe_forget() == ["specific.P!gone"]
    assert len(own) == 0
