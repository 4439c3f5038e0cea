"""The Redis layers' command link: how commands are encoded, batched and kept in step with their replies."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import pytest
from redis.asyncio.connection import Connection

from tests.layers.conftest import REDIS_URL
from tether.layers.redis.config import parse_hosts
from tether.layers.redis.endpoints import TransportSettings, open_endpoint
from tether.layers.redis.resp import pack_commands


@contextlib.asynccontextmanager
async def endpoint_on_shared_redis():
    endpoint = open_endpoint(parse_hosts([REDIS_URL])[0], TransportSettings(unavailable_timeout=5.0))
    key = f"tether-test:{secrets.token_hex(6)}"
    try:
        yield endpoint, key
    finally:
        await endpoint.call("DEL", key)
        await endpoint.aclose()


def test_commands_are_encoded_as_redis_py_encodes_them():
    commands = [("EVALSHA", "0" * 40, 1, "key", 5, 2.5, b"\x00|bytes"), ("PING",), ("SET", "k", b"v" * 40_000)]
    assert b"".join(pack_commands(commands)) == b"".join(Connection().pack_commands(commands))


def test_a_large_argument_is_its_own_chunk_and_not_copied():
    large = b"v" * 40_000
    assert any(chunk is large for chunk in pack_commands([("SET", "k", large)]))


def test_an_argument_redis_cannot_take_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="Cannot send a list to Redis"):
        pack_commands([("SET", "k", [1, 2])])


async def test_a_lone_command_gets_its_reply():
    async with endpoint_on_shared_redis() as (endpoint, key):
        assert await endpoint.call("SET", key, "v") == b"OK"
        assert await endpoint.call("GET", key) == b"v"


async def test_commands_made_while_one_is_out_all_get_their_own_replies():
    async with endpoint_on_shared_redis() as (endpoint, key):
        blocking = asyncio.ensure_future(endpoint.call("BLPOP", key + ":empty", 0.2))
        await asyncio.sleep(0.01)
        replies = await asyncio.gather(*(endpoint.call("ECHO", str(number)) for number in range(50)))
        assert replies == [str(number).encode() for number in range(50)]
        assert await blocking is None


async def test_a_command_cancelled_while_waiting_for_its_reply_does_not_hand_it_to_the_next_command():
    async with endpoint_on_shared_redis() as (endpoint, key):
        await endpoint.call("RPUSH", key, "late")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(endpoint.call("BLPOP", key + ":empty", 1), 0.1)
        assert await endpoint.call("ECHO", "next") == b"next"
        assert await endpoint.call("LRANGE", key, 0, -1) == [b"late"]


async def test_an_error_reply_fails_only_its_own_command():
    async with endpoint_on_shared_redis() as (endpoint, key):
        await endpoint.call("SET", key, "not a list")
        results = await asyncio.gather(
            endpoint.call("ECHO", "before"), endpoint.call("LPUSH", key, "x"), endpoint.call("ECHO", "after"),
            return_exceptions=True,
        )  # fmt: skip
        assert results[0] == b"before" and results[2] == b"after"
        assert "WRONGTYPE" in str(results[1])
