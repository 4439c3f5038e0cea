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


async def post(communicator, text: str) -> dict:
    await communicator.send_json_to({"type": "post", "room": "lounge", "text": text})
    return await communicator.receive_json_from()


async def test_a_burst_of_five_then_one_post_a_second(connect, alice, room, clock):
    communicator = await connect("/ws/chat/lounge/", alice)
    assert (await communicator.receive_json_from())["type"] == "joined"
    assert [(await post(communicator, f"hi {n}"))["text"] for n in range(5)] == [f"hi {n}" for n in range(5)]
    error = await post(communicator, "one too many")
    assert (error["type"], error["code"], error["request"]) == ("error", "rate_limited", "post")
    assert error["message"] == "You are posting too fast: wait 1 s and try again."
    clock.advance(1)
    assert (await post(communicator, "a second later"))["text"] == "a second later"
    assert (await post(communicator, "too soon"))["code"] == "rate_limited"
    assert counters() == {"chat.post": 2}
