"""The name and capacity rules ``BaseChannelLayer`` gives every layer: valid names, ``!`` names, capacity patterns."""

from __future__ import annotations

import re

import pytest

from tether.layers.base import MAX_NAME_LENGTH, BaseChannelLayer


@pytest.fixture
def base() -> BaseChannelLayer:
    return BaseChannelLayer()


# Channel and group names -----------------------------------------------------------------------------------------


def test_channel_name_of_ascii_letters_digits_dashes_underscores_and_dots_is_valid(base):
    assert base.require_valid_channel_name("chat.Room-42_alpha") is True


def test_group_name_of_ascii_letters_digits_dashes_underscores_and_dots_is_valid(base):
    assert base.require_valid_group_name("room.Lobby-1_x") is True


def test_names_must_be_shorter_than_100_characters():
    assert MAX_NAME_LENGTH == 100


def test_channel_name_of_99_characters_is_valid(base):
    assert base.require_valid_channel_name("c" * 99)


def test_channel_name_of_100_characters_is_rejected_with_its_length(base):
    with pytest.raises(TypeError, match=r"Channel name is 100 characters long; it must be shorter than 100"):
        base.require_valid_channel_name("c" * 100)


def test_group_name_of_99_characters_is_valid(base):
    assert base.require_valid_group_name("g" * 99)


def test_group_name_of_100_characters_is_rejected_with_its_length(base):
    with pytest.raises(TypeError, match=r"Group name is 100 characters long"):
        base.require_valid_group_name("g" * 100)


@pytest.mark.parametrize("name", [b"chat", None, 42, ["chat"]])
def test_channel_name_that_is_not_a_str_is_rejected_naming_its_type(base, name):
    with pytest.raises(TypeError, match=f"must be a str, not {type(name).__name__}"):
        base.require_valid_channel_name(name)


def test_group_name_that_is_not_a_str_is_rejected_naming_its_type(base):
    with pytest.raises(TypeError, match="Group name must be a str, not bytes"):
        base.require_valid_group_name(b"room")


@pytest.mark.parametrize("name", ["has space", "slash/name", "caf\u00e9", "colon:name", "semi;colon", "star*"])
def test_channel_name_with_a_forbidden_character_is_rejected_saying_what_is_allowed(base, name):
    with pytest.raises(TypeError, match=r"use ASCII letters, digits, '-', '_' and '\.'"):
        base.require_valid_channel_name(name)


def test_empty_channel_name_is_rejected(base):
    with pytest.raises(TypeError, match="is invalid"):
        base.require_valid_channel_name("")


def test_channel_name_with_a_trailing_newline_is_rejected(base):
    with pytest.raises(TypeError, match="is invalid"):
        base.require_valid_channel_name("chat\n")


def test_channel_name_may_hold_one_bang_before_a_process_local_part(base):
    assert base.require_valid_channel_name("specific.abc!def123")


def test_channel_name_may_end_at_its_bang(base):
    assert base.require_valid_channel_name("specific.abc!")


def test_channel_name_with_two_bangs_is_rejected(base):
    with pytest.raises(TypeError, match="at most one '!'"):
        base.require_valid_channel_name("a!b!c")


def test_channel_name_cannot_start_with_a_bang(base):
    with pytest.raises(TypeError, match="is invalid"):
        base.require_valid_channel_name("!local")


def test_group_name_cannot_hold_a_bang(base):
    with pytest.raises(TypeError, match="Group name 'room!1' is invalid"):
        base.require_valid_group_name("room!1")


def test_receive_name_with_a_bang_must_end_at_the_bang(base):
    with pytest.raises(TypeError, match="must end at the '!'"):
        base.require_valid_channel_name("specific.abc!def", receive=True)


def test_receive_name_ending_at_the_bang_is_valid(base):
    assert base.require_valid_channel_name("specific.abc!", receive=True)


def test_non_local_name_keeps_everything_up_to_and_including_the_bang(base):
    assert base.non_local_name("specific.abc!def") == "specific.abc!"


def test_non_local_name_of_a_name_without_bang_is_the_name_itself(base):
    assert base.non_local_name("chat.lobby") == "chat.lobby"


def test_valid_channel_names_checks_every_name_in_the_list(base):
    assert base.valid_channel_names(["a", "b.c", "d!e"])
    with pytest.raises(TypeError, match="'bad name' is invalid"):
        base.valid_channel_names(["a", "bad name"])


def test_valid_channel_names_requires_a_list(base):
    with pytest.raises(TypeError, match="must be given as a list, not tuple"):
        base.valid_channel_names(("a", "b"))


# Layer options ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expiry", [0, -1, "60", True])
def test_expiry_must_be_a_positive_number(expiry):
    with pytest.raises(ValueError, match="expiry must be a positive number of seconds"):
        BaseChannelLayer(expiry=expiry)


@pytest.mark.parametrize("capacity", [0, -5, 1.5, "100", False])
def test_capacity_must_be_a_positive_int(capacity):
    with pytest.raises(ValueError, match="capacity must be a positive int"):
        BaseChannelLayer(capacity=capacity)


# Capacity ----------------------------------------------------------------------------------------------------------


def test_compile_capacities_turns_glob_strings_into_regexes_that_match_whole_names(base):
    [(pattern, capacity)] = base.compile_capacities({"http.*": 7})
    assert capacity == 7
    assert pattern.match("http.request")
    assert not pattern.match("xhttp.request")
    assert not pattern.match("http")


def test_compile_capacities_keeps_compiled_regexes_as_they_are(base):
    regex = re.compile(r"^websocket\.send!")
    assert base.compile_capacities({regex: 3}) == [(regex, 3)]


def test_compile_capacities_keeps_the_order_of_the_patterns(base):
    compiled = base.compile_capacities({"a.*": 1, "b.*": 2, "*": 3})
    assert [capacity for _, capacity in compiled] == [1, 2, 3]


@pytest.mark.parametrize("value", [0, -1, 2.5, "10", None])
def test_compile_capacities_rejects_a_capacity_that_is_not_a_positive_int(base, value):
    with pytest.raises(ValueError, match=r"channel_capacity\['chat\.\*'\] must be a positive int"):
        base.compile_capacities({"chat.*": value})


def test_compile_capacities_rejects_keys_that_are_neither_globs_nor_regexes(base):
    with pytest.raises(TypeError, match="keys must be glob strings or compiled regexes, not 42"):
        base.compile_capacities({42: 10})


def test_compile_capacities_requires_a_dict(base):
    with pytest.raises(TypeError, match="channel_capacity must be a dict"):
        base.compile_capacities([("chat.*", 10)])


def test_get_capacity_is_the_default_capacity_without_patterns():
    assert BaseChannelLayer(capacity=25).get_capacity("anything") == 25


def test_get_capacity_uses_a_matching_glob():
    layer = BaseChannelLayer(capacity=10, channel_capacity={"http.request*": 200})
    assert layer.get_capacity("http.request") == 200
    assert layer.get_capacity("http.request.body") == 200
    assert layer.get_capacity("websocket.send") == 10


def test_get_capacity_uses_a_matching_compiled_regex():
    layer = BaseChannelLayer(capacity=10, channel_capacity={re.compile(r"^big\.\d+$"): 500})
    assert layer.get_capacity("big.12") == 500
    assert layer.get_capacity("big.x") == 10


def test_get_capacity_takes_the_first_pattern_that_matches():
    layer = BaseChannelLayer(capacity=10, channel_capacity={"chat.vip.*": 50, "chat.*": 20})
    assert layer.get_capacity("chat.vip.room") == 50
    assert layer.get_capacity("chat.room") == 20


def test_get_capacity_answers_the_same_for_a_name_asked_many_times():
    layer = BaseChannelLayer(capacity=10, channel_capacity={"chat.*": 20})
    assert [layer.get_capacity("chat.room") for _ in range(3)] == [20, 20, 20]
    assert [layer.get_capacity(f"other.{i}") for i in range(3)] == [10, 10, 10]


# Channels 4.x's name API, for layers and code written for Channels -------------------------------------------------


def test_valid_channel_name_warns_that_it_is_deprecated_and_returns_true(base):
    with pytest.warns(DeprecationWarning, match=r"require_valid_channel_name\(\)"):
        assert base.valid_channel_name("chat.lobby") is True


def test_valid_channel_name_warns_and_raises_type_error_for_an_invalid_name(base):
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="is invalid"):
        base.valid_channel_name("no spaces")


def test_valid_group_name_warns_that_it_is_deprecated_and_returns_true(base):
    with pytest.warns(DeprecationWarning, match=r"require_valid_group_name\(\)"):
        assert base.valid_group_name("room.lobby") is True


def test_valid_group_name_warns_and_raises_type_error_for_an_invalid_name(base):
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="is invalid"):
        base.valid_group_name("room!lobby")


def test_invalid_name_error_is_a_template_for_the_kind_of_name(base):
    message = base.invalid_name_error.format("Group")
    assert message.startswith("Group name must be a str shorter than 100 characters")


def test_name_patterns_are_offered_as_compiled_regexes(base):
    assert base.channel_name_regex.match("specific.abc!xyz")
    assert not base.channel_name_regex.match("a b")
    assert base.group_name_regex.match("room.lobby")
    assert not base.group_name_regex.match("room!lobby")


def test_match_type_and_length_accepts_short_strings_only(base):
    assert base.match_type_and_length("c" * 99) is True
    assert base.match_type_and_length("c" * 100) is False
    assert base.match_type_and_length(b"bytes") is False
