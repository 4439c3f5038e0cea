"""The member lists a process keeps for group frames that name their list by token (without Redis)."""

from __future__ import annotations

import time

from tether.layers.redis.member_lists import MemberLists
from tether.layers.redis.storage import Frame


def group_frame(token: str, targets: list[str], group: str = "room") -> Frame:
    return Frame(expires_at=0, group=group, targets=targets, payload=b"", token=token)


def test_a_frame_with_a_list_resolves_to_it_and_the_list_is_kept_under_its_token():
    lists = MemberLists()
    assert lists.resolve(group_frame("t1", ["specific.A!1", "specific.A!2"])) == ["specific.A!1", "specific.A!2"]
    assert lists.resolve(group_frame("t1", [])) == ["specific.A!1", "specific.A!2"]


def test_a_token_not_kept_here_resolves_to_none():
    lists = MemberLists()
    lists.resolve(group_frame("t1", ["specific.A!1"]))
    assert lists.resolve(group_frame("t2", [])) is None
    assert lists.resolve(group_frame("t1", [], group="other")) is None


def test_a_newer_list_replaces_the_kept_one():
    lists = MemberLists()
    lists.resolve(group_frame("t1", ["specific.A!1"]))
    lists.resolve(group_frame("t2", ["specific.A!2"]))
    assert lists.resolve(group_frame("t1", [])) is None
    assert lists.resolve(group_frame("t2", [])) == ["specific.A!2"]


def test_sweep_forgets_lists_unused_for_the_idle_time():
    lists = MemberLists(idle_after=0.05)
    lists.resolve(group_frame("t1", ["specific.A!1"], group="quiet"))
    time.sleep(0.06)
    lists.resolve(group_frame("t1", ["specific.A!1"], group="busy"))
    lists.sweep()
    assert len(lists) == 1
    assert lists.resolve(group_frame("t1", [], group="quiet")) is None
    assert lists.resolve(group_frame("t1", [], group="busy")) == ["specific.A!1"]


def test_a_kept_list_is_put_in_the_order_the_layer_asks_for():
    lists = MemberLists(order=sorted)
    assert lists.resolve(group_frame("t1", ["specific.A!2", "specific.A!1"])) == ["specific.A!1", "specific.A!2"]
    assert lists.resolve(group_frame("t1", [])) == ["specific.A!1", "specific.A!2"]


def test_a_list_is_checked_once_when_it_arrives_and_a_token_reuses_the_checked_list():
    checked = []

    def accept(group: str, entries: list[str]) -> list[str]:
        checked.append((group, list(entries)))
        return [entry.partition("~")[0] for entry in entries if entry.endswith("~ok")]

    lists = MemberLists(accept)
    assert lists.resolve(group_frame("t1", ["specific.A!1~ok", "specific.A!2~forged"])) == ["specific.A!1"]
    assert lists.resolve(group_frame("t1", [])) == ["specific.A!1"]
    assert checked == [("room", ["specific.A!1~ok", "specific.A!2~forged"])]


def test_a_frame_carrying_the_kept_list_again_is_not_checked_again():
    checked = []

    def accept(group: str, entries: list[str]) -> list[str]:
        checked.append(entries)
        return entries

    lists = MemberLists(accept)
    untokened = Frame(expires_at=0, group="room", targets=["specific.A!1"], payload=b"")
    assert lists.resolve(untokened) == ["specific.A!1"]
    assert lists.resolve(untokened) == ["specific.A!1"]
    assert len(checked) == 1
    assert lists.resolve(Frame(expires_at=0, group="room", targets=["specific.A!2"], payload=b"")) == ["specific.A!2"]
    assert len(checked) == 2


def test_a_token_frame_after_an_untokened_list_is_not_resolved():
    lists = MemberLists()
    lists.resolve(Frame(expires_at=0, group="room", targets=["specific.A!1"], payload=b""))
    assert lists.resolve(group_frame("t1", [])) is None


def test_outdated_lists_are_checked_again_when_they_next_arrive():
    present = {"specific.A!1"}
    lists = MemberLists(lambda group, entries: [entry for entry in entries if entry in present])
    assert lists.resolve(group_frame("t1", ["specific.A!1", "specific.A!2"])) == ["specific.A!1"]
    present.add("specific.A!2")
    lists.outdate()
    assert lists.resolve(group_frame("t1", [])) is None  # the layer asks Redis for the list
    assert lists.resolve(group_frame("t1", ["specific.A!1", "specific.A!2"])) == ["specific.A!1", "specific.A!2"]
