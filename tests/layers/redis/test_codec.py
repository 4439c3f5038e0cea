"""The message codec, without Redis: msgpack round trips, Fernet encryption with key rotation, the size limit."""

from __future__ import annotations

import pytest

from tether.exceptions import MessageTooLarge
from tether.layers.redis.codec import DecodeError, MessageCodec

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
