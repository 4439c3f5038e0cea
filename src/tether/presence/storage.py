"""What presence stores in Redis and how: key names, the value of a member, the Lua scripts. Sans-I/O.

The model (every key under the layer's ``prefix``, so ``layer.flush()`` deletes it with the rest):

* A process taking part in presence has a **process key** ``<client id>.<incarnation>`` (the incarnation starts at 1
  and grows when the process finds it was declared dead, see below).
* ``<prefix>:p:{~}`` is the **heartbeat** sorted set: one entry per live process key, scored by its last heartbeat
  (Redis's clock, ms). A heartbeat is one script call on this one key (``HEARTBEAT``), whatever the number of members
  and groups: it refreshes the process's score and returns a few process keys whose score is older than ``ttl``.
* ``<prefix>:p:{<group>}`` is a group's **members** hash: field = channel, value = ``<process key>|<JSON [user,
  joined ms, metadata]>``. Listing a group reads it (``HGETALL``) and keeps the members whose process key scored
  within ``ttl`` (``LIVENESS``, one call on the heartbeat set for all the processes seen): a dead process's members
  vanish from every list ``ttl`` after its last heartbeat, before anybody cleans up.
* ``<prefix>:p:{!<process key>}`` is the set of groups a process has members in, for the reaper.

**Reaping.** Each heartbeat returns stale process keys. For each, the live process first claims it (``CLAIM_DEAD``
removes it from the heartbeat set only if still stale, so one process wins), then for each group in its set removes
its members (``REAP_GROUP``, which removes only values of that process key) and announces them in one
``presence.leave`` event per group, then deletes the set. **Coming back.** A process whose heartbeat finds its entry
gone (it was paused or cut off longer than ``ttl``, and reaped) takes the next incarnation and stores its members
again under it; a reaper still at work removes only the old incarnation's values, so nothing of the new one is lost.
A pause shorter than ``ttl`` changes nothing: no leave, no join.

Every script touches one key (the heartbeat set, or one group's hash), so they run unchanged on Redis Cluster and
with sharded ``hosts`` (each key on the host the layer's hash ring gives its hash tag).
"""

from __future__ import annotations

import json
from typing import Any

from tether.layers.redis.storage import Script
from tether.presence.base import Record

__all__ = [
    "CLAIM_DEAD",
    "HEARTBEAT",
    "LEAVE",
    "LIVENESS",
    "REAP_GROUP",
    "REGISTER",
    "PresenceKeys",
    "pack_member",
    "unpack_member",
]

#: The hash tag of the heartbeat set (no group name holds ``~``).
HEARTBEATS_TAG = "~"


class PresenceKeys:
    """The Redis key names of presence under one layer ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def heartbeats(self) -> str:
        return f"{self.prefix}:p:{{{HEARTBEATS_TAG}}}"

    def members(self, group: str) -> str:
        return f"{self.prefix}:p:{{{group}}}"

    def groups_of(self, process: str) -> str:
        """The set of groups process key ``process`` has members in (no group name holds ``!``)."""
        return f"{self.prefix}:p:{{!{process}}}"


def pack_member(process: str, record: Record) -> str:
    """A members-hash value: the process key, then the user, join time and metadata as JSON."""
    return process + "|" + json.dumps([record.user, record.joined_ms, record.meta], separators=(",", ":"))


def unpack_member(channel: str, value: bytes | str) -> tuple[str, Record]:
    """``(process key, record)`` from a members-hash field and value; ``ValueError`` when it is not one."""
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    process, bar, rest = text.partition("|")
    if not bar:
        raise ValueError(f"not a presence member value: {text[:40]!r}")
    loaded: Any = json.loads(rest)
    user, joined_ms, meta = loaded
    return process, Record(channel, str(user), meta, int(joined_ms))


_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

REGISTER = Script(
    "presence_register",
    _NOW
    + """
-- KEYS[1] heartbeat set; ARGV: process key. A process starts (or starts again): scored now.
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
""",
)

HEARTBEAT = Script(
    "presence_heartbeat",
    _NOW
    + """
-- KEYS[1] heartbeat set; ARGV: process key, ttl (ms), how many stale process keys to return at most.
-- Returns {1 refreshed | 0 the process was reaped (not refreshed), {stale process keys}}.
local alive = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  alive = 1
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])), 'LIMIT', 0, ARGV[3])
return {alive, stale}
""",
)

CLAIM_DEAD = Script(
    "presence_claim_dead",
    _NOW
    + """
-- KEYS[1] heartbeat set; ARGV: process key, ttl (ms). Removes it if it is still stale: 1 (the caller reaps), else 0.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < now - tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
""",
)

LIVENESS = Script(
    "presence_liveness",
    _NOW
    + """
-- KEYS[1] heartbeat set; ARGV: process keys. Returns {now (ms), {their scores, false where absent}}.
return {now, redis.call('ZMSCORE', KEYS[1], unpack(ARGV))}
""",
)

LEAVE = Script(
    "presence_leave",
    """
-- KEYS[1] a group's members hash; ARGV: channel. Removes the member; returns its value (false if absent).
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then redis.call('HDEL', KEYS[1], ARGV[1]) end
return value
""",
)

REAP_GROUP = Script(
    "presence_reap_group",
    """
-- KEYS[1] a group's members hash; ARGV: process key. Removes that process key's members (only them: a process that
-- came back stores its members under a new key). Returns {field, value, field, value...} of those removed.
local prefix = ARGV[1] .. '|'
local removed = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[1], all[i])
    removed[#removed + 1] = all[i]
    removed[#removed + 1] = all[i + 1]
  end
end
return removed
""",
)
