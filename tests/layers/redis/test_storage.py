"""The Redis layer's storage model without Redis: key names and hash tags, frames, group records, sharding."""

from __future__ import annotations

import pytest

from tether.layers.redis.sharding import HashRing
from tether.layers.redis.storage import (
    GROUP_SEND,
    SEND_NAMED,
    KeySpace,
    client_id_of,
    frame_head,
    pack_frame,
    parse_frame,
)


def hash_tag(key: str) -> str:
    return key[key.index("{") + 1 : key.index("}")]


def test_keys_carry_the_prefix_and_the_name_as_hash_tag():
    keys = KeySpace("asgi")
    assert keys.channel("thumbnails") == "asgi:c:{thumbnails}"
    assert keys.group("room-1") == "asgi:g:{room-1}"
    assert keys.inbox("AbCd") == "asgi:i:{AbCd}"


def test_a_process_inbox_and_its_full_set_share_a_hash_slot():
    keys = KeySpace("asgi")
    assert hash_tag(keys.inbox("AbCd")) == hash_tag(keys.full("AbCd")) == "AbCd"


def test_the_scan_pattern_matches_this_prefix_only():
    import fnmatch

    keys = KeySpace("asgi")
    pattern = keys.scan_pattern
    assert all(
        fnmatch.fnmatchcase(key, pattern)
        for key in (keys.channel("a"), keys.group("g"), keys.inbox("x"), keys.full("x"))
    )
    assert not fnmatch.fnmatchcase(KeySpace("asgi2").channel("a"), pattern)
    assert not fnmatch.fnmatchcase("asgi:other", pattern)


@pytest.mark.parametrize(
    ("channel", "client_id"),
    [
        ("specific.AbCdEf!1234", "AbCdEf"),
        ("chat.room.AbCdEf!x", "AbCdEf"),
        ("AbCdEf!x", "AbCdEf"),
        ("thumbnails", None),
    ],
)
def test_the_owner_of_a_process_local_channel_is_the_client_id_before_the_bang(channel, client_id):
    assert client_id_of(channel) == client_id


def test_a_process_member_set_shares_the_hash_slot_of_its_group_index():
    keys = KeySpace("asgi")
    assert keys.group_members("room-1", "AbCd") == "asgi:g:{room-1}:AbCd"
    assert hash_tag(keys.group_members("room-1", "AbCd")) == hash_tag(keys.group("room-1"))


def test_a_frame_round_trips_its_expiry_group_targets_and_payload():
    payload = b"\x00|binary|,payload\xff"
    frame = parse_frame(pack_frame(1_700_000_000_123, payload, "room", "specific.A!1,specific.A!2"))
    assert frame.expires_at == 1_700_000_000_123
    assert frame.group == "room"
    assert frame.targets == ["specific.A!1", "specific.A!2"]
    assert frame.payload == payload


def test_a_direct_frame_has_no_group_and_no_targets():
    frame = parse_frame(pack_frame(5, b"data"))
    assert (frame.group, frame.targets, frame.payload) == ("", [], b"data")


def test_the_group_send_script_builds_frames_the_parser_reads():
    # The script concatenates: frame head .. targets .. "|" .. payload.
    data = frame_head(99, "room") + b"specific.A!1,specific.A!2" + b"|" + b"payload"
    frame = parse_frame(data)
    assert (frame.expires_at, frame.group, frame.targets, frame.payload) == (
        99,
        "room",
        ["specific.A!1", "specific.A!2"],
        b"payload",
    )


def test_a_group_frame_with_a_token_and_a_list_reads_both():
    frame = parse_frame(frame_head(99, "room") + b"#17.3:specific.A!1,specific.A!2|payload")
    assert (frame.token, frame.targets, frame.payload) == ("17.3", ["specific.A!1", "specific.A!2"], b"payload")


def test_a_group_frame_with_only_a_token_has_no_targets():
    frame = parse_frame(frame_head(99, "room") + b"#17.3|payload")
    assert (frame.group, frame.token, frame.targets, frame.payload) == ("room", "17.3", [], b"payload")


def test_a_direct_frame_has_no_token():
    assert parse_frame(pack_frame(5, b"data", "", "specific.A!1")).token is None


def test_a_group_index_its_member_sets_and_its_token_hash_share_a_hash_slot():
    keys = KeySpace("asgi")
    assert keys.group_tokens("room-1") == "asgi:g:{room-1}:#"
    assert hash_tag(keys.group_tokens("room-1")) == hash_tag(keys.group("room-1"))


def test_something_that_is_not_a_frame_is_a_value_error():
    with pytest.raises(ValueError):
        parse_frame(b"no bars here")


def test_scripts_are_addressed_by_the_sha1_of_their_source():
    import hashlib

    assert SEND_NAMED.sha == hashlib.sha1(SEND_NAMED.source.encode()).hexdigest()
    assert SEND_NAMED.sha != GROUP_SEND.sha


def test_one_host_takes_every_name():
    ring = HashRing(["redis://a"])
    assert {ring.index_for(f"name-{n}") for n in range(100)} == {0}


def test_names_spread_over_every_host():
    ring = HashRing(["redis://a", "redis://b", "redis://c"])
    counts = [0, 0, 0]
    for number in range(3000):
        counts[ring.index_for(f"channel-{number}")] += 1
    assert min(counts) > 600  # roughly a third each


def test_removing_a_host_moves_only_the_names_it_held():
    before = HashRing(["redis://a", "redis://b", "redis://c"])
    after = HashRing(["redis://a", "redis://b"])
    names = [f"group-{number}" for number in range(2000)]
    for name in names:
        host = before.index_for(name)
        if host != 2:
            assert after.index_for(name) == host


def test_the_order_of_hosts_does_not_change_where_a_name_lives():
    forward = HashRing(["redis://a", "redis://b", "redis://c"])
    backward = HashRing(["redis://c", "redis://b", "redis://a"])
    names = {0: "redis://a", 1: "redis://b", 2: "redis://c"}
    back = {0: "redis://c", 1: "redis://b", 2: "redis://a"}
    for number in range(500):
        name = f"n{number}"
        assert names[forward.index_for(name)] == back[backward.index_for(name)]


def test_the_member_tag_separator_is_in_no_name_tag_or_frame_separator():
    from tether.layers.base import BaseChannelLayer
    from tether.layers.redis.codec import MessageCodec
    from tether.layers.redis.storage import MEMBER_TAG

    assert MEMBER_TAG not in "|,#:!"
    assert not BaseChannelLayer.channel_name_regex.search(f"a{MEMBER_TAG}b")
    assert not BaseChannelLayer.group_name_regex.search(f"a{MEMBER_TAG}b")
    entry = MessageCodec(["k"]).member_entry("room", "specific.A!1")
    assert entry.count(MEMBER_TAG) == 1
    assert not set(entry) & set("|,#:")  # a tagged entry travels in a frame's target list unescaped
