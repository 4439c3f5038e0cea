"""Presence's Redis model without I/O (key names, member values), and its scripts on the shared Redis under a prefix
of the test's own: the reaper removes only the dead incarnation's members, and claims a process once."""

from __future__ import annotations

import pytest
import redis

from tests.layers.conftest import REDIS_URL
from tests.layers.redis.conftest import new_prefix
from tether.presence.base import Record
from tether.presence.storage import CLAIM_DEAD, REAP_GROUP, PresenceKeys, pack_member, unpack_member


def test_every_key_has_one_hash_tag_that_no_other_kind_of_key_can_have():
    keys = PresenceKeys("asgi")
    assert keys.members("room.1") == "asgi:p:{room.1}"
    assert keys.heartbeats == "asgi:p:{~}"
    assert keys.groups_of("abc.1") == "asgi:p:{!abc.1}"


def test_a_member_value_round_trips_with_its_process_key():
    record = Record("specific.abc!x", "42", {"name": "Ada | Lovelace", "n": [1, None]}, 1_700_000_000_123)
    value = pack_member("abc.2", record)
    assert value.startswith("abc.2|")
    assert unpack_member(record.channel, value.encode()) == ("abc.2", record)


def test_an_unreadable_member_value_is_a_value_error():
    with pytest.raises(ValueError, match="not a presence member"):
        unpack_member("specific.abc!x", b"garbage")


@pytest.fixture
def client():
    connection = redis.Redis.from_url(REDIS_URL)
    prefix = new_prefix()
    yield connection, PresenceKeys(prefix)
    for key in connection.scan_iter(match=f"{prefix}:*"):
        connection.delete(key)
    connection.close()


def test_the_reaper_removes_only_the_dead_incarnation_s_members(client):
    connection, keys = client
    group = keys.members("room.reap")
    old = Record("specific.abc!1", "1", {}, 1)
    back = Record("specific.abc!2", "2", {}, 2)
    other = Record("specific.xyz!1", "3", {}, 3)
    connection.hset(group, mapping={old.channel: pack_member("abc.1", old), back.channel: pack_member("abc.2", back)})
    connection.hset(group, other.channel, pack_member("xyz.1", other))
    removed = connection.eval(REAP_GROUP.source, 1, group, "abc.1")
    assert removed[::2] == [old.channel.encode()]
    assert sorted(connection.hkeys(group)) == sorted([back.channel.encode(), other.channel.encode()])


def test_a_stale_process_is_claimed_once_and_a_fresh_one_never(client):
    connection, keys = client
    now_ms = int(connection.time()[0]) * 1000
    connection.zadd(keys.heartbeats, {"dead.1": now_ms - 60_000, "live.1": now_ms})
    assert connection.eval(CLAIM_DEAD.source, 1, keys.heartbeats, "dead.1", 20_000) == 1
    assert connection.eval(CLAIM_DEAD.source, 1, keys.heartbeats, "dead.1", 20_000) == 0
    assert connection.eval(CLAIM_DEAD.source, 1, keys.heartbeats, "live.1", 20_000) == 0
    assert connection.zrange(keys.heartbeats, 0, -1) == [b"live.1"]
