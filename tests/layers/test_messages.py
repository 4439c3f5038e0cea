"""What a layer accepts as a message, and the private copies it hands out (``tether.layers.messages``)."""

from __future__ import annotations

import enum
from collections import OrderedDict, namedtuple

import pytest

from tether.layers.messages import clone_message, copy_message, require_valid_message


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_copy_message_keeps_every_carriable_value():
    message = {
        "type": "chat.message",
        "text": "hi",
        "bytes": b"\x00\xff",
        "int": -7,
        "float": 1.5,
        "bool": True,
        "none": None,
        "list": [1, "two", [3.0]],
        "dict": {"nested": {"deep": False}},
    }
    assert copy_message(message) == message


def test_copy_message_returns_a_copy_that_shares_no_dict_or_list_with_the_original():
    message = {"type": "x", "items": [{"n": 1}], "meta": {"tags": ["a"]}}
    copied = copy_message(message)
    copied["items"][0]["n"] = 2
    copied["meta"]["tags"].append("b")
    assert message == {"type": "x", "items": [{"n": 1}], "meta": {"tags": ["a"]}}


def test_copy_message_turns_tuples_into_lists():
    copied = copy_message({"type": "x", "point": (1, (2, 3))})
    assert copied["point"] == [1, [2, 3]]
    assert type(copied["point"]) is list
    assert type(copied["point"][1]) is list


def test_copy_message_turns_a_namedtuple_into_a_list():
    point = namedtuple("Point", "x y")
    assert copy_message({"type": "x", "p": point(1, 2)})["p"] == [1, 2]


def test_copy_message_turns_str_and_int_enums_into_their_plain_values():
    copied = copy_message({"type": "x", "colour": Colour.RED, "level": Level.HIGH})
    assert type(copied["colour"]) is str and copied["colour"] == "red"
    assert type(copied["level"]) is int and copied["level"] == 3


def test_copy_message_accepts_a_dict_subclass_and_gives_back_a_plain_dict():
    copied = copy_message({"type": "x", "ordered": OrderedDict(a=1)})
    assert type(copied["ordered"]) is dict and copied["ordered"] == {"a": 1}


def test_a_set_value_is_rejected_naming_its_place():
    with pytest.raises(TypeError, match=r"message\['data'\]\[1\] is set"):
        copy_message({"type": "x", "data": [1, {2, 3}]})


def test_an_arbitrary_object_is_rejected_naming_its_place_and_type():
    class Thing:
        pass

    with pytest.raises(TypeError, match=r"message\['payload'\]\['thing'\] is Thing"):
        copy_message({"type": "x", "payload": {"thing": Thing()}})


def test_a_non_str_key_is_rejected_naming_the_dict_that_holds_it():
    with pytest.raises(TypeError, match=r"Message keys must be str; message\['scores'\] has key 1"):
        copy_message({"type": "x", "scores": {1: "one"}})


def test_a_message_that_is_not_a_dict_is_rejected():
    with pytest.raises(TypeError, match="A message must be a dict, not list"):
        copy_message([("type", "x")])


def test_a_message_without_a_type_is_rejected():
    with pytest.raises(ValueError, match="needs a 'type' key"):
        copy_message({"text": "hello"})


def test_require_valid_message_accepts_a_good_message_and_rejects_a_bad_one():
    require_valid_message({"type": "x", "n": 1})
    with pytest.raises(TypeError, match=r"message\['when'\] is"):
        require_valid_message({"type": "x", "when": object()})


def test_clone_message_gives_a_receiver_its_own_nested_dicts_and_lists():
    shared = copy_message({"type": "x", "items": [1], "meta": {"k": "v"}})
    mine = clone_message(shared)
    mine["items"].append(2)
    mine["meta"]["k"] = "changed"
    assert shared == {"type": "x", "items": [1], "meta": {"k": "v"}}
