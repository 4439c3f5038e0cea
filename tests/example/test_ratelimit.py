"""The example's per-user post limit: a token bucket per user, on an injected clock."""

from __future__ import annotations

import pytest

from chat.ratelimit import PerUserLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_one_action_per_refill():
    clock = Clock()
    limit = PerUserLimit(3, 2.0, clock=clock)
    assert [limit.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take("alice") == pytest.approx(0.5)
    clock.now += 0.5
    assert limit.take("alice") == 0.0
    assert limit.take("alice") == pytest.approx(0.5)


def test_a_refused_action_takes_nothing_and_the_bucket_never_holds_more_than_the_burst():
    clock = Clock()
    limit = PerUserLimit(2, 1.0, clock=clock)
    limit.take("alice")
    limit.take("alice")
    for _ in range(5):
        assert limit.take("alice") == pytest.approx(1.0)
    clock.now += 3600
    assert [limit.take("alice") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_each_user_has_a_bucket_of_their_own():
    limit = PerUserLimit(1, 0.001, clock=Clock())
    assert limit.take(1) == 0.0
    assert limit.take(1) > 0
    assert limit.take(2) == 0.0


def test_past_max_users_the_least_recently_active_bucket_is_dropped():
    limit = PerUserLimit(1, 0.001, max_users=2, clock=Clock())
    limit.take(1)
    limit.take(2)
    limit.take(1)  # refused, but makes 1 the most recently active
    limit.take(3)  # drops 2
    assert limit.take(1) > 0  # still limited
    assert limit.take(2) == 0.0  # a fresh bucket


@pytest.mark.parametrize(("burst", "per_second"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_a_limit_that_allows_nothing_is_refused(burst, per_second):
    with pytest.raises(ValueError, match="burst >= 1 and per_second > 0"):
        PerUserLimit(burst, per_second)
