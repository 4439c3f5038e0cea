"""The Redis model of streams without Redis: the message bytes, the entries, the key names."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from tether.layers.redis.cluster import slot_of
from tether.layers.redis.storage import KeySpace
from tether.streams.base import stream_message
from tether.streams.storage import StreamKeys, message_head, message_tail, parse_entry


def test_head_data_and_tail_make_the_stream_message() -> None:
    data = {"text": "hi", "n": [1, 2]}
    packed = message_head("chat.lobby") + msgpack.packb(data) + message_tail("e1", 42)
    assert msgpack.unpackb(packed) == stream_message("chat.lobby", "e1", 42, data)


def test_a_large_offset_survives_the_bytes() -> None:
    packed = message_head("s") + msgpack.packb(None) + message_tail("e", 2**40)
    assert msgpack.unpackb(packed)["offset"] == 2**40


def test_an_entry_streams_wrote_is_read_back() -> None:
    assert parse_entry([b"7-0", [b"d", msgpack.packb({"a": 1}), b"t", b"123"]]) == (7, {"a": 1})


@pytest.mark.parametrize(
    "entry",
    [
        [b"7-1", [b"d", msgpack.packb(1)]],
        [b"x-0", [b"d", msgpack.packb(1)]],
        [b"7-0", [b"x", b"y"]],
        [b"7-0", [b"d", b"\xc1"]],
        [b"7-0", [b"d"]],
        [b"7-0"],
        None,
    ],
)
def test_anything_else_is_a_value_error(entry: Any) -> None:
    with pytest.raises(ValueError, match="not a stream entry"):
        parse_entry(entry)


def test_a_streams_keys_share_the_slot_of_its_group() -> None:
    keys, layer_keys = StreamKeys("p"), KeySpace("p")
    names = (keys.history("room.1", "e"), keys.meta("room.1"), layer_keys.group("room.1"))
    slots = {slot_of(key) for key in names}
    assert len(slots) == 1


def test_the_layers_flush_pattern_covers_the_stream_keys() -> None:
    import fnmatch

    keys, layer_keys = StreamKeys("p"), KeySpace("p")
    for key in (keys.history("s", "e"), keys.meta("s")):
        assert fnmatch.fnmatchcase(key, layer_keys.scan_pattern)
        assert fnmatch.fnmatchcase(key, layer_keys.history_pattern)
