"""Fixtures of the rate limit tests: a fresh store and counters per test, and a clock the test moves by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tether.ratelimit import limiter


class Clock:
    """A clock that stands still until the test advances it: refills happen exactly when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No bucket or count leaks between tests: users and addresses (127.0.0.1) repeat from test to test."""
    monkeypatch.setattr(limiter, "_store", None)
    monkeypatch.setattr(limiter, "_store_failing", False)
    limiter.reset_counters()
    yield
    limiter.reset_counters()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The limiter's clock (in-memory buckets and each connection's bucket), frozen until ``clock.advance()``."""
    fake = Clock()
    monkeypatch.setattr(limiter, "clock", fake)
    return fake
