"""Rates as written in the settings, and the arithmetic of one token bucket."""

from __future__ import annotations

import pytest

from tether.ratelimit.rates import Rate, TokenBucket, parse_rate


@pytest.mark.parametrize(
    ("text", "capacity", "per_second"),
    [
        ("20/min", 20, 20 / 60),
        ("10/s", 10, 10.0),
        ("10/second", 10, 10.0),
        ("3/10s", 3, 0.3),
        ("1/1000s", 1, 0.001),
        ("100/hours", 100, 100 / 3600),
        ("5/day", 5, 5 / 86400),
        (" 10 / 2.5 mins ", 10, 10 / 150),
        ("10/s burst 50", 50, 10.0),
    ],
)
def test_a_rate_is_a_count_per_period_with_an_optional_burst(text, capacity, per_second):
    rate = parse_rate(text)
    assert (rate.capacity, rate.per_second) == (capacity, pytest.approx(per_second))
    assert str(rate) == text.strip()


@pytest.mark.parametrize("text", ["", "10", "10/", "/s", "10/ms", "10/fortnight", "ten/s", "-1/s", "10/s burst"])
def test_a_rate_that_cannot_be_read_names_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r'"20/min", "10/s", "3/10s" or "10/s burst 50"'):
        parse_rate(text)


@pytest.mark.parametrize("text", ["0/s", "10/0s", "10/s burst 0"])
def test_a_rate_that_allows_nothing_is_refused(text):
    with pytest.raises(ValueError, match="allows nothing"):
        parse_rate(text)


def test_a_rate_that_is_not_a_string_is_refused():
    with pytest.raises(ValueError, match="A rate is a string"):
        parse_rate(10)  # type: ignore[arg-type]
    assert parse_rate(Rate(2, 1.0)) == Rate(2, 1.0)


def test_a_burst_is_allowed_then_one_take_per_refill():
    rate = parse_rate("3/1.5s")  # three at once, then one every half second
    bucket = TokenBucket(rate, now=0.0)
    assert [bucket.take(rate, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(rate, 0.0) == pytest.approx(0.5)
    assert bucket.take(rate, 0.5) == 0.0
    assert bucket.take(rate, 0.5) == pytest.approx(0.5)


def test_a_refused_take_takes_nothing_and_a_bucket_never_holds_more_than_its_capacity():
    rate = parse_rate("2/2s")
    bucket = TokenBucket(rate, now=0.0)
    bucket.take(rate, 0.0)
    bucket.take(rate, 0.0)
    for _ in range(5):
        assert bucket.take(rate, 0.0) == pytest.approx(1.0)
    assert bucket.limited
    assert [bucket.take(rate, 3600.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_a_clock_that_goes_backwards_grants_nothing():
    rate = parse_rate("1/10s")
    bucket = TokenBucket(rate, now=100.0)
    assert bucket.take(rate, 100.0) == 0.0
    assert bucket.take(rate, 50.0) == pytest.approx(10.0)
    assert bucket.take(rate, 105.0) == pytest.approx(5.0)
    assert bucket.take(rate, 110.0) == 0.0
