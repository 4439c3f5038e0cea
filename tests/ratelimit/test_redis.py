"""The Redis store: the same buckets as in memory, shared by every process, under a key prefix of its own.

Against the shared Redis on 127.0.0.1:6379 (``TETHER_TEST_REDIS_URL``), each test with a prefix of its own whose keys
are deleted afterwards (never a flush). "Recovered" moves an injected clock; "shared by two processes" runs two
uvicorn processes of the test project and never waits for a refill (one token per 1000 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.project.harness import copy_project, uvicorn_processes
from tests.ratelimit.conftest import Clock
from tests.test_denial import handshake
from tether.ratelimit import MemoryStore, RedisStore, counters, parse_rate

REDIS_URL = os.environ.get("TETHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 15.0


def redis_host() -> Any:
    pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    from tether.layers.redis.config import parse_hosts

    return parse_hosts([REDIS_URL])[0]


@pytest.fixture
def prefix() -> str:
    return f"tether-test-ratelimit-{secrets.token_hex(6)}"


@pytest.fixture
async def redis_store(prefix: str) -> AsyncIterator[RedisStore]:
    """A Redis store on a clock of the test's own; its keys are deleted afterwards."""
    store = RedisStore(redis_host(), prefix, clock=Clock())
    try:
        yield store
    finally:
        await store.delete_all()
        await store.aclose()


async def test_a_redis_bucket_is_limited_then_recovers_as_its_clock_moves_on(redis_store):
    clock = redis_store.clock
    rate = parse_rate("2/2000s")
    assert [await redis_store.take("alice", rate) for _ in range(2)] == [(0.0, False), (0.0, False)]
    assert await redis_store.take("alice", rate) == (pytest.approx(1000), True)  # the first refusal: logged
    assert await redis_store.take("alice", rate) == (pytest.approx(1000), False)
    assert await redis_store.take("bob", rate) == (0.0, False)
    clock.advance(1000)
    assert await redis_store.take("alice", rate) == (0.0, False)
    assert await redis_store.take("alice", rate) == (pytest.approx(1000), True)


async def test_memory_and_redis_give_the_same_answers(redis_store):
    memory_clock = Clock()
    memory = MemoryStore(clock=memory_clock)
    rate = parse_rate("3/1.5s")
    for step in [0, 0, 0, 0, 0.25, 0.25, 0.5, 0.5, 10, 0, 0, 0, 0, -5, 5]:
        memory_clock.advance(step)
        redis_store.clock.advance(step)
        from_memory, from_redis = await memory.take("k", rate), await redis_store.take("k", rate)
        assert from_redis == (pytest.approx(from_memory[0]), from_memory[1]), step


async def test_keys_live_under_the_prefix_with_an_expiry_and_nothing_else_is_deleted(redis_store, prefix):
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    neighbour = f"{prefix}-neighbour"  # another prefix's key, which starts with ours
    try:
        await client.set(neighbour, "kept")
        await redis_store.take("project:connect_per_ip:127.0.0.1", parse_rate("5/50s"))
        keys = await client.keys(f"{prefix}:*")
        assert keys == [f"{prefix}:project:connect_per_ip:127.0.0.1".encode()]
        # Full again after 10 s (one token a second): the key expires a second after that.
        assert 10_000 < await client.pttl(keys[0]) <= 11_000
        assert await redis_store.delete_all() == 1
        assert await client.get(neighbour) == b"kept"
    finally:
        await client.delete(neighbour)
        await client.aclose()


async def test_an_unreachable_redis_lets_handshakes_through_and_counts_the_errors(serve, settings):
    from tests.ratelimit.test_live import application, connect, echo

    settings.TETHER_RATE_LIMITS = {"connect_per_ip": "1/1000s", "store": "redis://127.0.0.1:1/0"}
    server = serve(application)
    for n in range(2):
        async with connect(server, "echo/") as ws:
            assert await echo(ws, n) == {"n": n}
    assert counters() == {"store_errors": 2}


@pytest.mark.parametrize("route", ["echo/", "sync/"])
async def test_a_users_message_limit_in_redis_holds_over_their_connections(serve, settings, prefix, route):
    from tests.ratelimit.test_live import application, connect, echo

    redis_host()
    settings.TETHER_RATE_LIMITS = {"messages_per_user": "2/2000s", "store": REDIS_URL, "prefix": prefix}
    server = serve(application)
    try:
        async with connect(server, f"{route}?user=3") as first, connect(server, f"{route}?user=3") as second:
            assert await echo(first, 1) == {"n": 1}
            assert await echo(second, 2) == {"n": 2}
            for ws in (first, second):
                refused = await echo(ws, 3)
                assert (refused["code"], refused["limit"]) == ("rate_limited", "messages_per_user")
                assert 990 <= refused["retry_after"] <= 1000  # Redis's clock runs: see the two-process test
        assert counters() == {"messages_per_user": 2}
    finally:
        store = RedisStore(redis_host(), prefix)
        await store.delete_all()
        await store.aclose()


# --- two processes ----------------------------------------------------------------------------------------------


@pytest.fixture
def two_servers(tmp_path: Path, prefix: str) -> Iterator[list[str]]:
    """Two uvicorn processes of the test project whose handshakes share one Redis bucket per address."""
    redis_host()
    project = copy_project(tmp_path)
    limits = json.dumps({"connect_per_ip": "3/3000s", "store": REDIS_URL, "prefix": prefix})
    env = {"PROJECT_RATE_LIMITS": limits}
    try:
        with uvicorn_processes(project, [env, env], "--lifespan", "off", "--no-proxy-headers") as commands:
            yield [command.host for command in commands]
    finally:

        async def delete_own_keys() -> None:
            store = RedisStore(redis_host(), prefix)
            await store.delete_all()
            await store.aclose()

        asyncio.run(delete_own_keys())


class Host:
    def __init__(self, address: str) -> None:
        self.host, port = address.split(":")
        self.port = int(port)


async def test_two_processes_share_the_handshake_limit_through_redis(two_servers):
    first, second = two_servers
    for address in (first, second, first):
        async with websockets.connect(f"ws://{address}/ws/echo/", open_timeout=WAIT) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), WAIT) == "hi"
    for address in (second, first):
        status, headers, body = await handshake(Host(address), "ws/echo/")
        # Redis's clock runs: a slow run refills a little (a thousandth of a token a second), hence the range.
        assert status == 429 and 990 <= int(headers["retry-after"]) <= 1000
        assert json.loads(body)["limit"] == "connect_per_ip"
