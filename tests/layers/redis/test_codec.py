"""The message codec, without Redis: msgpack round trips, Fernet encryption with key rotation, the size limit, and
(encrypting) the destination seal, the age limit and membership tags."""

from __future__ import annotations

import pytest

from tether.exceptions import MessageTooLarge
from tether.layers.redis.codec import (
    TO_CHANNEL,
    TO_GROUP,
    DecodeError,
    MessageCodec,
    MisroutedMessage,
    StaleMessage,
)
from tether.layers.redis.storage import MEMBER_TAG

MESSAGE = {"type": "chat.message", "text": "h\u00e9llo", "data": b"\x00\xff", "n": [1, 2.5, None, True]}


def test_a_message_survives_encoding_unchanged():
    codec = MessageCodec()
    assert codec.decode(codec.encode(MESSAGE)) == MESSAGE


def test_tuples_come_back_as_lists():
    codec = MessageCodec()
    assert codec.decode(codec.encode({"type": "t", "point": (1, 2)})) == {"type": "t", "point": [1, 2]}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "t", "when": object()}, TypeError),
        ({"type": "t", 1: "int key"}, TypeError),
        ({"no": "type"}, ValueError),
        (["type", "t"], TypeError),
    ],
)
def test_a_message_the_layer_cannot_carry_is_refused_before_it_is_sent(message, error):
    with pytest.raises(error):
        MessageCodec().encode(message)


def test_an_encrypted_message_does_not_show_its_content_and_decrypts_with_the_same_key():
    codec = MessageCodec(["first-secret"])
    data = codec.encode({"type": "secret.message", "text": "the launch code"})
    assert b"launch" not in data
    assert b"secret.message" not in data
    assert codec.decode(data) == {"type": "secret.message", "text": "the launch code"}


def test_key_rotation_the_first_key_encrypts_and_every_key_decrypts():
    old = MessageCodec(["old-secret"])
    rotated = MessageCodec(["new-secret", "old-secret"])
    new_only = MessageCodec(["new-secret"])
    from_old = old.encode(MESSAGE)
    from_rotated = rotated.encode(MESSAGE)
    assert rotated.decode(from_old) == MESSAGE
    assert new_only.decode(from_rotated) == MESSAGE
    with pytest.raises(DecodeError, match="could not be decrypted"):
        new_only.decode(from_old)


def test_an_encrypting_codec_refuses_unencrypted_data():
    with pytest.raises(DecodeError):
        MessageCodec(["k"]).decode(MessageCodec().encode(MESSAGE))


def test_garbage_is_a_decode_error():
    with pytest.raises(DecodeError, match="msgpack"):
        MessageCodec().decode(b"\xc1 not msgpack")
    with pytest.raises(DecodeError, match="type"):
        MessageCodec().decode(b"\x93\x01\x02\x03")  # a msgpack list, not a message


def test_a_message_over_max_message_size_raises_message_too_large_with_both_sizes():
    codec = MessageCodec(max_message_size=1000)
    codec.encode({"type": "small", "data": b"x" * 900})
    with pytest.raises(MessageTooLarge, match=r"1\d{3} bytes encoded; this layer accepts at most 1000"):
        codec.encode({"type": "big", "data": b"x" * 1000})


def test_the_size_limit_counts_the_encrypted_size():
    plain = len(MessageCodec().encode({"type": "t", "data": b"x" * 600}))
    codec = MessageCodec(["k"], max_message_size=plain + 10)
    with pytest.raises(MessageTooLarge):
        codec.encode({"type": "t", "data": b"x" * 600})


# Seals, age and membership tags (encryption only) ----------------------------------------------------------------


def test_an_encrypted_message_opens_only_where_it_was_sealed_for():
    codec = MessageCodec(["k"])
    data = codec.encode(MESSAGE, TO_CHANNEL, "specific.A!victim")
    assert codec.decode(data, TO_CHANNEL, "specific.A!victim") == MESSAGE
    for kind, name in [(TO_CHANNEL, "specific.A!guest"), (TO_GROUP, "specific.A!victim"), (TO_CHANNEL, "")]:
        with pytest.raises(MisroutedMessage, match=r"sealed for 'c:specific\.A!victim'"):
            codec.decode(data, kind, name)


def test_a_group_message_opens_only_for_its_group():
    codec = MessageCodec(["k"])
    data = codec.encode(MESSAGE, TO_GROUP, "room-1")
    assert codec.decode(data, TO_GROUP, "room-1") == MESSAGE
    with pytest.raises(MisroutedMessage):
        codec.decode(data, TO_GROUP, "room-2")


def test_without_keys_there_is_no_seal_and_no_check():
    codec = MessageCodec()
    data = codec.encode(MESSAGE, TO_CHANNEL, "a")
    assert data == MessageCodec().encode(MESSAGE)
    assert codec.decode(data, TO_GROUP, "anything") == MESSAGE


def test_an_encrypted_message_older_than_max_age_is_stale_whatever_the_frame_says():
    now = [1_700_000_000.0]
    codec = MessageCodec(["k"], max_age=3, clock=lambda: now[0])
    data = codec.encode(MESSAGE, TO_CHANNEL, "c")
    now[0] += 3
    assert codec.decode(data, TO_CHANNEL, "c") == MESSAGE
    now[0] += 1
    with pytest.raises(StaleMessage, match="older than 3s"):
        codec.decode(data, TO_CHANNEL, "c")


def test_a_stale_message_under_a_key_no_longer_listed_is_a_plain_decode_error():
    now = [1_700_000_000.0]
    data = MessageCodec(["old"], clock=lambda: now[0]).encode(MESSAGE)
    now[0] += 100
    with pytest.raises(DecodeError, match="could not be decrypted") as raised:
        MessageCodec(["new"], max_age=3, clock=lambda: now[0]).decode(data)
    assert not isinstance(raised.value, StaleMessage)


def test_an_encrypted_message_without_a_seal_is_refused_as_from_an_older_release():
    from cryptography.fernet import Fernet

    from tether.layers.redis.codec import _fernet_key

    unsealed = Fernet(_fernet_key(b"k")).encrypt(MessageCodec().encode(MESSAGE))
    with pytest.raises(DecodeError, match="no destination seal"):
        MessageCodec(["k"]).decode(unsealed)


def test_a_member_is_stored_tagged_and_the_tag_binds_group_and_channel():
    codec = MessageCodec(["k"])
    entry = codec.member_entry("room", "specific.A!1")
    channel, mark, tag = entry.partition(MEMBER_TAG)
    assert (channel, mark, len(tag)) == ("specific.A!1", "~", 16)
    assert codec.member_channel("room", entry) == "specific.A!1"
    assert codec.member_channel("other-room", entry) is None
    assert codec.member_channel("room", "specific.A!2" + MEMBER_TAG + tag) is None
    assert codec.member_channel("room", "specific.A!1") is None  # untagged: an older release, or forged
    assert codec.member_channel("room", entry[:-1] + ("A" if entry[-1] != "A" else "B")) is None
    assert MessageCodec(["other-key"]).member_channel("room", entry) is None


def test_membership_tags_follow_key_rotation():
    old, rotated = MessageCodec(["old"]), MessageCodec(["new", "old"])
    assert rotated.member_channel("room", old.member_entry("room", "worker")) == "worker"
    assert rotated.member_entry("room", "worker") != old.member_entry("room", "worker")
    assert rotated.member_forms("room", "worker") == [
        "worker",
        rotated.member_entry("room", "worker"),
        old.member_entry("room", "worker"),
    ]


def test_without_keys_members_are_stored_and_read_as_they_are():
    codec = MessageCodec()
    assert codec.member_entry("room", "worker") == "worker"
    assert codec.member_forms("room", "worker") == ["worker"]
    assert codec.member_channel("room", "worker") == "worker"
