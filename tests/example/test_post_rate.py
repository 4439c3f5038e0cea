"""The example's posting limit, kept by tether's rate limiter: five posts at once, then one a second, per user."""

from __future__ import annotations

import pytest

from tests.ratelimit.conftest import Clock
from tether.ratelimit import counters, limiter


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(limiter, "clock", fake)
    return fake


async def test_a_burst_of_five_then_one_post_a_second(open_page, alice, room, clock):
    page = await open_page(alice)
    posts = [await page.request("post", room="lounge", text=f"hi {n}") for n in range(5)]
    assert all("result" in reply for reply in posts)
    error = await page.error("post", room="lounge", text="one too many")
    assert error == {"code": "rate_limited", "message": "You are posting too fast: wait 1 s and try again."}
    clock.advance(1)
    assert "result" in await page.request("post", room="lounge", text="a second later")
    assert (await page.error("post", room="lounge", text="too soon"))["code"] == "rate_limited"
    assert counters() == {"chat.post": 2}
