"""The limiter's pieces without a server: the client's address, ``take()`` for limits of your own, the counters, and
a store that fails."""

from __future__ import annotations

import logging

import pytest

from tether.ratelimit import client_ip, counters, take
from tether.ratelimit import limiter as limiter_module


def scope(client: tuple[str, int] | None = ("10.0.0.1", 5000), forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"type": "websocket", "client": client, "headers": headers}


@pytest.mark.parametrize(
    ("trusted", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.1"),  # not trusted: the header is anyone's to write
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the client wrote 6.6.6.6 itself
        (2, "6.6.6.6, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
        (3, "203.0.113.9", "203.0.113.9"),  # fewer entries than proxies: the leftmost
        (1, None, "10.0.0.1"),
        (1, "203.0.113.9, my-own-bucket", "10.0.0.1"),  # not an address: the header is not used
    ],
)
def test_the_address_comes_from_the_proxies_only_when_they_are_trusted(trusted, forwarded, expected):
    assert client_ip(scope(forwarded=forwarded), trusted) == expected


def test_an_ipv6_client_is_keyed_by_its_64_network_and_a_mapped_ipv4_as_ipv4():
    assert client_ip(scope(("2001:db8:1:2:aaaa::1", 1))) == "2001:db8:1:2::/64"
    assert client_ip(scope(("2001:db8:1:2:bbbb::9", 1))) == "2001:db8:1:2::/64"
    assert client_ip(scope(("::ffff:192.0.2.7", 1))) == "192.0.2.7"
    assert client_ip(scope(None)) is None
    assert client_ip(scope(("unix-peer", 0))) == "unix-peer"


async def test_take_limits_a_subject_of_your_own_and_counts_it_under_the_bucket_name(clock, caplog):
    with caplog.at_level(logging.WARNING, logger="tether.ratelimit"):
        assert [await take("chat.post", 1, "2/2000s") for _ in range(2)] == [0.0, 0.0]
        assert await take("chat.post", 1, "2/2000s") == pytest.approx(1000)
        assert await take("chat.post", 1, "2/2000s") == pytest.approx(1000)
        assert await take("chat.post", 2, "2/2000s") == 0.0
        clock.advance(1000)
        assert await take("chat.post", 1, "2/2000s") == 0.0
    assert counters() == {"chat.post": 2}
    assert len([record for record in caplog.records if record.name == "tether.ratelimit"]) == 1


class FailingStore:
    def __init__(self) -> None:
        self.failing = True

    async def take(self, key: str, rate: object) -> tuple[float, bool]:
        if self.failing:
            raise ConnectionError("Redis is away")
        return 5.0, True

    async def aclose(self) -> None:
        pass


async def test_a_failing_store_lets_actions_through_counts_them_and_warns_once_per_outage(monkeypatch, caplog):
    store = FailingStore()
    monkeypatch.setattr(limiter_module, "_store", store)
    with caplog.at_level(logging.WARNING, logger="tether.ratelimit"):
        assert [await take("b", 1, "1/1000s") for _ in range(3)] == [0.0, 0.0, 0.0]
        store.failing = False
        assert await take("b", 1, "1/1000s") == 5.0
    assert counters() == {"store_errors": 3, "b": 1}
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("The rate limit store failed (Redis is away)")
    assert messages[1] == "The rate limit store answers again; limits apply."
    assert len(messages) == 3  # and the refusal of subject 1
