"""The stream protocol's pure parts, without a connection: frame parsing (``parse_frame``) and the presence diffs
(``PresenceView``). The live behaviour is in test_protocol.py."""

from __future__ import annotations

from typing import Any

import pytest

from tether.presence import Connection, Member
from tether.streams.consumer import (
    BAD_POSITION,
    BAD_REQUEST,
    UNKNOWN_TYPE,
    PresenceView,
    ProtocolError,
    Request,
    RequestError,
    StreamConsumer,
    Subscribe,
    Unsubscribe,
    parse_frame,
)


def test_a_subscribe_with_a_position_and_presence_is_parsed() -> None:
    frame = parse_frame(
        {"type": "subscribe", "id": 1, "stream": "room.a", "epoch": "e", "offset": 41, "presence": True}
    )
    assert frame == Subscribe(1, "room.a", "e", 41, True)


def test_a_subscribe_without_a_position_starts_from_now() -> None:
    assert parse_frame({"type": "subscribe", "id": "s1", "stream": "room.a"}) == Subscribe("s1", "room.a")


def test_unsubscribe_and_request_are_parsed_with_params_defaulting_to_an_empty_object() -> None:
    assert parse_frame({"type": "unsubscribe", "id": 2, "stream": "room.a"}) == Unsubscribe(2, "room.a")
    assert parse_frame({"type": "request", "id": 3, "method": "typing"}) == Request(3, "typing", {})


def test_fields_the_protocol_does_not_define_are_ignored() -> None:
    assert parse_frame({"type": "unsubscribe", "id": 2, "stream": "room.a", "v": 2}) == Unsubscribe(2, "room.a")


def test_an_unknown_type_keeps_the_frame_s_id_for_the_reply() -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_frame({"type": "publish", "id": 9})
    assert (refused.value.code, refused.value.id) == (UNKNOWN_TYPE, 9)


@pytest.mark.parametrize("id", [None, True, 1.5, "", "x" * 101, [1], 2**60])
def test_an_unusable_id_is_a_bad_request_replied_with_a_null_id(id: Any) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_frame({"type": "subscribe", "id": id, "stream": "room.a"})
    assert (refused.value.code, refused.value.id) == (BAD_REQUEST, None)


@pytest.mark.parametrize(
    "position",
    [{"epoch": "e", "offset": "1"}, {"epoch": "e", "offset": -1}, {"epoch": "e", "offset": 1.0}, {"epoch": "e"}],
)
def test_an_offset_that_is_not_one_is_a_bad_position_naming_the_offset(position: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_frame({"type": "subscribe", "id": 1, "stream": "room.a", **position})
    assert refused.value.code == BAD_POSITION and '"offset"' in refused.value.message


def test_a_request_error_needs_a_code() -> None:
    with pytest.raises(TypeError):
        RequestError("", "no code")


@pytest.mark.parametrize(
    "attributes",
    [{"max_concurrency": 4}, {"slow_client_policy": "drop_oldest"}, {"max_subscriptions": 0}],
)
def test_a_subclass_that_would_break_the_guarantees_is_refused_when_defined(attributes: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=next(iter(attributes))):
        type("Broken", (StreamConsumer,), attributes)


def member(user: str, *channels: str) -> Member:
    return Member(user, tuple(Connection(channel, {"name": user, "tab": channel}, 0.0) for channel in channels))


def entry(user: str, channel: str) -> dict[str, Any]:
    return {"user": user, "channel": channel, "meta": {"name": user, "tab": channel}}


def test_a_snapshot_lists_one_member_per_user_with_the_newest_connection_s_metadata() -> None:
    view = PresenceView([member("ada", "c1", "c2"), member("bob", "c3")])
    assert view.members() == [
        {"user": "ada", "meta": {"name": "ada", "tab": "c2"}, "connections": 2},
        {"user": "bob", "meta": {"name": "bob", "tab": "c3"}, "connections": 1},
    ]


def test_a_second_connection_of_a_user_is_a_join_with_the_new_count() -> None:
    view = PresenceView([member("ada", "c1")])
    joins, leaves = view.apply("presence.join", [entry("ada", "c2"), entry("bob", "c3")])
    assert [(m["user"], m["connections"]) for m in joins] == [("ada", 2), ("bob", 1)] and leaves == []


def test_a_user_leaves_when_their_last_connection_does() -> None:
    view = PresenceView([member("ada", "c1", "c2")])
    assert view.apply("presence.leave", [entry("ada", "c1")]) == (
        [{"user": "ada", "meta": {"name": "ada", "tab": "c2"}, "connections": 1}],
        [],
    )
    assert view.apply("presence.leave", [entry("ada", "c2")]) == (
        [],
        [{"user": "ada", "meta": {"name": "ada", "tab": "c2"}, "connections": 0}],
    )
    assert view.members() == []


def test_events_the_snapshot_already_reflects_give_no_diff() -> None:
    view = PresenceView([member("ada", "c1")])
    assert view.apply("presence.join", [entry("ada", "c1")]) == ([], [])
    assert view.apply("presence.leave", [entry("bob", "c9")]) == ([], [])
