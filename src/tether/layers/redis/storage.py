"""What the Redis layer stores and how: key names, the frame around each message, the Lua scripts, group records.

Sans-I/O: nothing here talks to Redis. The layer and its tests use these definitions; the connection module only
carries the commands.

The model:

* A **named channel** (``"thumbnails"``) is a Redis list ``<prefix>:c:{<name>}``: senders ``RPUSH``, receivers
  ``BLPOP``, so workers in any number of processes share the queue. Capacity is the list length.
* A **process-local channel** (``"specific.<client id>!<token>"``, from ``new_channel()``) lives in the memory of the
  process that made it. Messages for it travel through that process's **inbox** list ``<prefix>:i:{<client id>}``,
  which one receive loop per process reads and routes to the right local channel. The set
  ``<prefix>:f:{<client id>}`` names that process's channels that are full, so senders elsewhere get ``ChannelFull``.
* A **group** is an index, the sorted set ``<prefix>:g:{<group>}``, holding one entry per process with members
  (``!<client id>``) and one per named-channel member, each scored by its latest join time (ms); each process's
  members are in their own sorted set ``<prefix>:g:{<group>}:<client id>``, scored by join time. ``group_send``
  drops members older than ``group_expiry``, then pushes **one** frame per process listing that process's members
  (one ``ZRANGE``, no per-member work in Lua), plus one frame per named-channel member: the process fans out in
  memory. A process's entry outlives its newest member by ``group_expiry`` at most, so a crashed process's members
  are gone after ``group_expiry`` (or as soon as a live process discards them).
* A process remembers the member list of the last group frame it got for each group, under a **token**; the hash
  ``<prefix>:g:{<group>}:#`` records, per process, the token of the list that process was last sent. While a
  process's members stay the same, ``group_send`` pushes it only the token (``#<token>``) instead of the list
  (``#<token>:<a>,<b>,...``): no ``ZRANGE`` and no member names on the wire, whatever the group's size. Any change to a
  process's members (join, leave, expiry) deletes its token, so the next frame carries the list again. A process
  whose remembered token does not match (the frame with the list expired unread) asks Redis for its members
  (``GROUP_RESYNC``), which also deletes the token.
* Every stored message is a **frame**: ``<expires at, ms>|<group>|<targets>|<payload>``. Receivers discard a frame
  whose time has passed (counted as expired), so a message that outlives ``expiry`` is never delivered even while its
  list lives on. Names cannot hold ``|``, ``,``, ``#``, ``:`` or ``~``, so the header needs no escaping. A frame in a
  named channel's list is for that channel alone, whatever its targets say; a frame in an inbox is for the targets it
  names that are channels of that process (``own_channels.py``): other names are dropped and counted, never buffered,
  so what a process holds is bounded by ``capacity`` per channel it has, not by what the frames name.

**With encryption** (``symmetric_encryption_keys``) the header stays plain, so nothing in it is trusted:

* The payload is a Fernet token of ``<seal>|<msgpack>``; the seal is ``c:<channel>`` for a direct send (the named
  channel, or the one process-local target) and ``g:<group>`` for a group send (``codec.py``). A receiver refuses a
  direct frame unless the channel it is delivering to (the list it popped, or the frame's single inbox target) is the
  sealed one, a group frame unless its header group (on pub/sub, the group of the topic it came on) is the sealed
  one, and any frame whose Fernet timestamp is older than ``expiry`` plus ``SEAL_MARGIN`` seconds, whatever the
  header's expiry says.
* Group members are stored **tagged**: ``<channel>~<tag>``, the tag being 16 characters of URL-safe base64 of an
  HMAC-SHA256 of ``<group>|<channel>`` under a key derived from the first encryption key (any listed key verifies,
  so rotation works). ``group_add`` replaces any other form of the member (untagged, or tagged by another key);
  ``group_discard`` removes every form. The process receiving a member list (a frame's, ``GROUP_RESYNC``'s) checks
  each tag once when the list arrives and drops the members whose tag fails; a sender checks the tags of named-channel
  members (``GROUP_SEND``, ``GROUP_MEMBERS``) and sends each one a frame whose single target is its tagged entry,
  which the worker popping the list checks again (so a frame copied to another list is refused).
* Rolling upgrade: an encrypting process refuses frames without a seal and members without a tag, which is what a
  release before sealed frames writes. Upgrade every process sharing the keys together; members added by an older
  release are refused (counted) until they join again.
* What this cannot stop: whoever can write to Redis can still delete, delay or drop messages and memberships, and can
  put back a membership that was discarded (its tag stays valid until the keys change). Keep Redis private.

* A **durable channel** (the layer's ``durable`` option) is a Redis stream ``<prefix>:s:{<name>}`` read through the
  consumer group ``tether``, each process a consumer named by its client id; an entry's field ``f`` holds its frame.
  A message read is pending until it is acknowledged (``XACK`` + ``XDEL``), refused, or left longer than the
  visibility timeout (any reader then takes it over with ``XAUTOCLAIM``); its delivery count is its attempt number.
  A message delivered ``max_attempts`` times goes to the list ``<prefix>:d:{<name>}`` as a dead letter. Capacity is
  the stream's length: the messages not yet handled.

* **Presence** (``tether.presence``) keeps its keys under ``<prefix>:p:`` (``tether/presence/storage.py`` is their
  spec), so ``flush()`` deletes them too.

* **Streams** (``tether.streams``) keep their history under ``<prefix>:h:`` (``tether/streams/storage.py`` is its
  spec), so ``flush()`` deletes it too. A stream is also a group: its publish script runs ``GROUP_SEND``'s fan-out
  (``GROUP_FAN_OUT``) on a message it completes with the offset it gives.

Every key a script touches carries the same ``{hash tag}``, so the scripts run unchanged on Redis Cluster. The
single-call ``GROUP_SEND`` script touches inboxes it finds in the group, so it is used only on a single Redis (or a
Sentinel-managed one); sharded and cluster deployments use ``GROUP_MEMBERS`` then ``PUSH_INBOX`` per process.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

__all__ = [
    "DURABLE_ACK",
    "DURABLE_CLAIM",
    "DURABLE_GROUP",
    "DURABLE_NACK",
    "DURABLE_RELEASE",
    "DURABLE_SEND",
    "GIVE_BACK",
    "GROUP_ADD",
    "GROUP_DISCARD",
    "GROUP_FAN_OUT",
    "GROUP_MEMBERS",
    "GROUP_RESYNC",
    "GROUP_SEND",
    "GROUP_WALK",
    "MEMBER_TAG",
    "PROCESS_ENTRY",
    "PUSH_INBOX",
    "SEAL_MARGIN",
    "SEND_LOCAL",
    "SEND_NAMED",
    "Frame",
    "KeySpace",
    "Script",
    "client_id_of",
    "frame_head",
    "now_ms",
    "pack_frame",
    "parse_frame",
]


def now_ms() -> int:
    """Wall-clock milliseconds: the clock of frame expiry times and membership times, which processes on several
    machines share."""
    return int(time.time() * 1000)


#: The first character of a group index entry that stands for a process (channel names cannot start with it).
PROCESS_ENTRY = "!"

#: What separates a member's channel from its tag when encrypting (no channel or group name holds it).
MEMBER_TAG = "~"

#: Seconds past ``expiry`` an encrypted message may still be read: Fernet timestamps are whole seconds, and machines'
#: clocks differ a little (the frames' expiry times already assume NTP).
SEAL_MARGIN = 2


class KeySpace:
    """The Redis key (and pub/sub channel) names of one layer ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.inbox_prefix = f"{prefix}:i:"

    def channel(self, name: str) -> str:
        """The list holding a named channel's messages."""
        return f"{self.prefix}:c:{{{name}}}"

    def inbox(self, client_id: str) -> str:
        """The list through which a process receives messages for its local channels."""
        return f"{self.inbox_prefix}{{{client_id}}}"

    def full(self, client_id: str) -> str:
        """The set of a process's local channels that are at capacity (same slot as its inbox)."""
        return f"{self.prefix}:f:{{{client_id}}}"

    def group(self, name: str) -> str:
        """A group's index: an entry per process holding members (``!<client id>``) and per named member."""
        return f"{self.prefix}:g:{{{name}}}"

    def group_members(self, name: str, client_id: str) -> str:
        """One process's members of a group, scored by join time in ms (same slot as the index)."""
        return f"{self.prefix}:g:{{{name}}}:{client_id}"

    def group_tokens(self, name: str) -> str:
        """The hash of member-list tokens last sent to each process of a group (same slot as the index)."""
        return f"{self.prefix}:g:{{{name}}}:#"

    def stream(self, name: str) -> str:
        """The stream holding a durable channel's messages until they are acknowledged."""
        return f"{self.prefix}:s:{{{name}}}"

    def dead_letters(self, name: str) -> str:
        """The list of a durable channel's dead letters (same slot as its stream)."""
        return f"{self.prefix}:d:{{{name}}}"

    @property
    def history_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for this prefix's stream history keys (``tether.streams``)."""
        return f"{self.prefix}:h:*"

    @property
    def scan_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for this prefix's keys and no other's (the prefix holds no glob characters)."""
        return f"{self.prefix}:[cifgsdph]:*"


def client_id_of(channel: str) -> str | None:
    """The client id of the process that owns a process-local channel (``a.b.<id>!x`` -> ``<id>``); None for a
    named channel."""
    bang = channel.find("!")
    if bang < 0:
        return None
    return channel[:bang].rpartition(".")[2]


# Frames -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A stored message: when it expires (epoch ms), the group it was sent to (``""`` for a direct send), the
    channels it is for (empty for a named channel's own list, and for a group frame that names only its ``token``)
    and the encoded message. ``token`` (group frames of ``GROUP_SEND`` only) names the member list: the one in
    ``targets``, or when that is empty, the one the receiving process remembers under it."""

    expires_at: int
    group: str
    targets: list[str]
    payload: bytes
    token: str | None = None


def frame_head(expires_at: int, group: str = "") -> bytes:
    """The part of a frame before its targets, as the ``GROUP_SEND`` script receives it."""
    return b"%d|%s|" % (expires_at, group.encode("ascii"))


def pack_frame(expires_at: int, payload: bytes, group: str = "", targets: str = "") -> bytes:
    """Build a frame; ``targets`` is a comma-separated list of channel names."""
    return b"%d|%s|%s|" % (expires_at, group.encode("ascii"), targets.encode("ascii")) + payload


def parse_frame(data: bytes) -> Frame:
    """Read a frame; raises ``ValueError`` when ``data`` is not one."""
    parts = data.split(b"|", 3)
    if len(parts) != 4:
        raise ValueError(f"not a tether frame: {data[:40]!r}")
    expires_at, group, targets, payload = parts
    token = None
    if targets[:1] == b"#":
        token_bytes, _, targets = targets[1:].partition(b":")
        token = token_bytes.decode("ascii")
    return Frame(
        int(expires_at),
        group.decode("ascii"),
        targets.decode("ascii").split(",") if targets else [],
        payload,
        token,
    )


# Scripts ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    """A Lua script, run with ``EVALSHA`` (and ``EVAL`` when the server has not seen it yet)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode("utf-8")).hexdigest())


# Drop expired frames from the head of a list while it is full. A frame's first field is its expiry in ms.
_TRIM_EXPIRED = """
local function trim_expired(key, length, now)
  local trimmed = 0
  while length > 0 do
    local head = redis.call('LINDEX', key, 0)
    local bar = string.find(head, '|', 1, true)
    if not bar or tonumber(string.sub(head, 1, bar - 1)) > now then break end
    redis.call('LPOP', key)
    length = length - 1
    trimmed = trimmed + 1
  end
  return length, trimmed
end
"""

SEND_NAMED = Script(
    "send_named",
    _TRIM_EXPIRED
    + """
-- KEYS[1] channel list; ARGV: capacity, now (ms), frame, ttl (ms). Returns {1 sent | 0 full, frames expired}.
local length = redis.call('LLEN', KEYS[1])
local trimmed = 0
if length >= tonumber(ARGV[1]) then
  length, trimmed = trim_expired(KEYS[1], length, tonumber(ARGV[2]))
  if length >= tonumber(ARGV[1]) then return {0, trimmed} end
end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, trimmed}
""",
)

GIVE_BACK = Script(
    "give_back",
    """
-- KEYS[1] channel list; ARGV: ttl (ms), then the frames in the order they were popped.
-- Puts the frames back at the head, in order, and sets the expiry a send sets: the list may have been drained and
-- deleted meanwhile, and a list re-created without one would outlive every message in it.
for i = #ARGV, 2, -1 do
  redis.call('LPUSH', KEYS[1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
""",
)

# Durable channels: a Redis stream per channel, read through one consumer group ("tether"), each process a consumer
# named by its client id. An entry's one field "f" holds its frame. Pending entries are the messages delivered and
# not yet acknowledged; their delivery count is the attempt number. Acknowledged entries are deleted, so the stream's
# length is what is unhandled, and capacity applies to it. A dead letter is the msgpack array
# [frame, attempts, error, died at ms] in the channel's dead-letter list.

_DEAD_LETTER = """
local function dead_letter(stream, dead, group, id, frame, attempts, error, now, ttl)
  redis.call('RPUSH', dead, cmsgpack.pack({frame, attempts, error, now}))
  redis.call('PEXPIRE', dead, ttl)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end
"""

DURABLE_SEND = Script(
    "durable_send",
    """
-- KEYS[1] stream; ARGV: capacity, now (ms), frame, ttl (ms), group. Returns {1 sent | 0 full, frames expired}.
local length = redis.call('XLEN', KEYS[1])
local trimmed = 0
if length >= tonumber(ARGV[1]) then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)) do
    local frame = entry[2][2]
    local bar = string.find(frame, '|', 1, true)
    if not bar or tonumber(string.sub(frame, 1, bar - 1)) > tonumber(ARGV[2]) then break end
    redis.call('XACK', KEYS[1], ARGV[5], entry[1])
    redis.call('XDEL', KEYS[1], entry[1])
    trimmed = trimmed + 1
  end
  if length - trimmed >= tonumber(ARGV[1]) then return {0, trimmed} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[5], '0', 'MKSTREAM')
end
redis.call('XADD', KEYS[1], '*', 'f', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, trimmed}
""",
)

DURABLE_GROUP = Script(
    "durable_group",
    """
-- KEYS[1] stream; ARGV: group, ttl (ms). Makes the consumer group (and an empty stream) if there is none.
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
""",
)

DURABLE_CLAIM = Script(
    "durable_claim",
    _DEAD_LETTER
    + """
-- KEYS[1] stream, KEYS[2] dead letters; ARGV: group, consumer, min idle (ms), count, max attempts, now (ms), dead
-- letter ttl (ms). Takes over entries delivered longer than min idle ago and not settled (their receiver died or
-- hangs, or gave them back); those delivered max attempts times already become dead letters.
-- Returns {{id, frame, attempt}...}, dead-lettered count}.
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
local dead = 0
for _, entry in ipairs(claimed[2]) do
  if type(entry) == 'table' and entry[2] then
    local id = entry[1]
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local attempt = pending[1] and pending[1][4] or 1
    if attempt > tonumber(ARGV[5]) then
      dead_letter(KEYS[1], KEYS[2], ARGV[1], id, entry[2][2], attempt - 1, '', tonumber(ARGV[6]), ARGV[7])
      dead = dead + 1
    else
      table.insert(out, {id, entry[2][2], attempt})
    end
  end
end
return {out, dead}
""",
)

DURABLE_ACK = Script(
    "durable_ack",
    """
-- KEYS[1] stream; ARGV: group, then ids (at most a few thousand). The messages were handled: forget them.
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
""",
)

DURABLE_NACK = Script(
    "durable_nack",
    _DEAD_LETTER
    + """
-- KEYS[1] stream, KEYS[2] dead letters; ARGV: group, consumer, id, max attempts, error, now (ms), dead letter ttl.
-- Handling failed. Returns false when the entry is no longer this consumer's (settled, or taken over), {0} when it
-- became a dead letter, else {1, frame, attempt}: it is delivered again to this consumer at once.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not pending[1] or pending[1][2] ~= ARGV[2] then return false end
local attempt = pending[1][4]
local entry = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if not entry[1] then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return false
end
if attempt >= tonumber(ARGV[4]) then
  dead_letter(KEYS[1], KEYS[2], ARGV[1], ARGV[3], entry[1][2][2], attempt, ARGV[5], tonumber(ARGV[6]), ARGV[7])
  return {0}
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3])
return {1, entry[1][2][2], attempt + 1}
""",
)

DURABLE_RELEASE = Script(
    "durable_release",
    """
-- KEYS[1] stream; ARGV: group, consumer, idle (ms), then id, deliveries pairs. Entries this consumer took but never
-- handed to a receiver: made claimable by any consumer at once, their delivery count put back as it was.
for i = 4, #ARGV, 2 do
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
end
return (#ARGV - 3) / 2
""",
)

SEND_LOCAL = Script(
    "send_local",
    """
-- KEYS[1] inbox, KEYS[2] full set; ARGV: channel, inbox capacity, frame, ttl (ms).
-- Returns 1 sent, 0 the channel is full, -1 the process's inbox is full (it is not reading).
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
""",
)

PUSH_INBOX = Script(
    "push_inbox",
    """
-- KEYS[1] inbox; ARGV: inbox capacity, frame, ttl (ms). Returns 1 pushed, 0 the inbox is full.
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""",
)

GROUP_ADD = Script(
    "group_add",
    """
-- KEYS[1] group index [, KEYS[2] the process's member set, KEYS[3] the group's token hash];
-- ARGV: now (ms), member entry, group expiry (ms), index entry, then the member's other forms to replace (tagged by
-- another key, or untagged). A process's changed members mean a new token (see GROUP_SEND).
if #ARGV > 4 then redis.call('ZREM', KEYS[2] or KEYS[1], unpack(ARGV, 5)) end
if KEYS[2] then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], string.sub(ARGV[4], 2))
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""",
)

GROUP_DISCARD = Script(
    "group_discard",
    """
-- KEYS[1] group index [, KEYS[2] the process's member set, KEYS[3] the group's token hash];
-- ARGV: index entry, then every form of the member entry (untagged, tagged by each key).
if KEYS[2] then
  if redis.call('ZREM', KEYS[2], unpack(ARGV, 2)) > 0 then redis.call('HDEL', KEYS[3], string.sub(ARGV[1], 2)) end
  if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]) end
else
  redis.call('ZREM', KEYS[1], unpack(ARGV, 2))
end
return 1
""",
)

GROUP_RESYNC = Script(
    "group_resync",
    """
-- KEYS[1] a process's member set, KEYS[2] the group's token hash; ARGV: client id, cutoff (ms).
-- The process lost track of its member list: forget its token (the next frame lists them) and return them now.
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')
""",
)

# Drop the index entries older than the cutoff (ARGV[1]) and the member sets of the processes among them, counting
# the members in ``expired``; with a ``tokens`` hash, those processes' member-list tokens go too. Member sets share the
# index's hash slot ("<index>:<client id>").
_DROP_STALE = """
local cutoff = '(' .. ARGV[1]
local expired = 0
local stale = redis.call('ZRANGEBYSCORE', index, '-inf', cutoff)
for _, entry in ipairs(stale) do
  if string.byte(entry, 1) == 33 then
    local client_id = string.sub(entry, 2)
    local members = index .. ':' .. client_id
    expired = expired + redis.call('ZCARD', members)
    redis.call('DEL', members)
    if tokens then redis.call('HDEL', tokens, client_id) end
  else
    expired = expired + 1
  end
end
if #stale > 0 then redis.call('ZREMRANGEBYSCORE', index, '-inf', cutoff) end
"""

#: Drop the stale entries of the group index KEYS[1] (cutoff ARGV[1]), then walk it: for each process, its live
#: members; for each named member, its name. Leaves ``expired``, ``processes``, ``lists`` and ``named``.
GROUP_WALK = (
    """
local index, tokens = KEYS[1], nil
"""
    + _DROP_STALE
    + """
local processes, lists, named = {}, {}, {}
for _, entry in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if string.byte(entry, 1) == 33 then
    local client_id = string.sub(entry, 2)
    local members = index .. ':' .. client_id
    expired = expired + redis.call('ZREMRANGEBYSCORE', members, '-inf', cutoff)
    local live = redis.call('ZRANGE', members, 0, -1)
    if #live == 0 then
      redis.call('ZREM', index, entry)
    else
      processes[#processes + 1] = client_id
      lists[#lists + 1] = table.concat(live, ',')
    end
  else
    named[#named + 1] = entry
  end
end
"""
)

GROUP_MEMBERS = Script(
    "group_members",
    """
-- KEYS[1] group index; ARGV: cutoff (ms: members who joined before it have expired).
-- Returns {members expired, {client ids}, {their members, comma-separated}, {named-channel members}}.
"""
    + GROUP_WALK
    + """
return {expired, processes, lists, named}
""",
)

#: The body of ``GROUP_SEND``, for scripts that send to a group in the same call as they write beside it: KEYS[1] and
#: KEYS[2] and ARGV[1] to ARGV[8] as ``GROUP_SEND`` takes them, except that the message is the Lua variable
#: ``payload`` (which ARGV[5] is for ``GROUP_SEND`` itself). Leaves ``expired``, ``pushed``, ``full`` and ``named``.
GROUP_FAN_OUT = (
    """
local index, tokens = KEYS[1], KEYS[2]
"""
    + _DROP_STALE
    + """
local capacity = tonumber(ARGV[3])
local full, named = {}, {}
local pushed = 0
for _, entry in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if string.byte(entry, 1) == 33 then
    local client_id = string.sub(entry, 2)
    local members = index .. ':' .. client_id
    local gone = redis.call('ZREMRANGEBYSCORE', members, '-inf', cutoff)
    if gone > 0 then
      expired = expired + gone
      redis.call('HDEL', tokens, client_id)
    end
    if redis.call('EXISTS', members) == 0 then
      redis.call('ZREM', index, entry)
      redis.call('HDEL', tokens, client_id)
    else
      local inbox = ARGV[2] .. '{' .. client_id .. '}'
      if redis.call('LLEN', inbox) >= capacity then
        full[#full + 1] = client_id
      else
        local token = redis.call('HGET', tokens, client_id)
        local targets
        if token then
          targets = '#' .. token
        else
          token = ARGV[7] .. '.' .. redis.call('HINCRBY', tokens, '#', 1)
          redis.call('HSET', tokens, client_id, token)
          redis.call('PEXPIRE', tokens, ARGV[8])
          targets = '#' .. token .. ':' .. table.concat(redis.call('ZRANGE', members, 0, -1), ',')
        end
        redis.call('RPUSH', inbox, ARGV[4] .. targets .. '|' .. payload)
        redis.call('PEXPIRE', inbox, ARGV[6])
        pushed = pushed + 1
      end
    end
  else
    named[#named + 1] = entry
  end
end
"""
)

GROUP_SEND = Script(
    "group_send",
    """
-- KEYS[1] group index, KEYS[2] the group's token hash; ARGV: cutoff (ms), inbox key prefix, inbox capacity,
-- frame head, payload, ttl (ms), now (ms), group expiry (ms).
-- One frame per process inbox: its member list's token, plus the list itself when the process was not sent this
-- list before. Returns {members expired, inboxes pushed, {client ids whose inbox was full}, {named members}}.
local payload = ARGV[5]
"""
    + GROUP_FAN_OUT
    + """
return {expired, pushed, full, named}
""",
)
