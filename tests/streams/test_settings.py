"""TETHER_STREAMS: bounds per stream name pattern, checked with errors naming the pattern and key (tether.E014)."""

from __future__ import annotations

from typing import Any

import pytest

from tether.layers.base import BaseChannelLayer
from tether.streams import DEFAULT_MAX_AGE, DEFAULT_MAX_LENGTH, StreamBounds, get_streams
from tether.streams.settings import StreamPolicy


def test_a_stream_matching_no_pattern_gets_the_defaults() -> None:
    assert StreamPolicy({"chat.*": {"max_length": 5}}).bounds_for("news") == StreamBounds(
        DEFAULT_MAX_LENGTH, DEFAULT_MAX_AGE
    )


def test_the_first_matching_pattern_wins_and_a_missing_key_keeps_its_default() -> None:
    policy = StreamPolicy({"chat.vip": {"max_age": 60}, "chat.*": {"max_length": 5, "max_age": 10}})
    assert policy.bounds_for("chat.vip") == StreamBounds(DEFAULT_MAX_LENGTH, 60.0)
    assert policy.bounds_for("chat.lobby") == StreamBounds(5, 10.0)


@pytest.mark.parametrize(
    ("config", "error", "names"),
    [
        ([], TypeError, "must be a dict"),
        ({"": {}}, TypeError, "patterns"),
        ({"chat.*": 5}, TypeError, "chat"),
        ({"chat.*": {"size": 5}}, TypeError, "size"),
        ({"chat.*": {"max_length": 0}}, ValueError, "max_length"),
        ({"chat.*": {"max_length": 10**6}}, ValueError, "max_length"),
        ({"chat.*": {"max_length": True}}, ValueError, "max_length"),
        ({"chat.*": {"max_age": -1}}, ValueError, "max_age"),
        ({"chat.*": {"max_age": float("inf")}}, ValueError, "max_age"),
        ({"chat.*": {"max_age": "1h"}}, ValueError, "max_age"),
    ],
)
def test_bad_settings_are_refused_naming_what_is_wrong(config: Any, error: type[Exception], names: str) -> None:
    with pytest.raises(error, match=names):
        StreamPolicy(config)


def test_get_streams_reads_the_setting(settings: Any) -> None:
    from tether.layers import InMemoryChannelLayer

    settings.TETHER_STREAMS = {"short.*": {"max_length": 2}}
    assert get_streams(InMemoryChannelLayer()).policy.bounds_for("short.x").max_length == 2


def test_get_streams_refuses_a_bad_setting(settings: Any) -> None:
    from tether.layers import InMemoryChannelLayer

    settings.TETHER_STREAMS = {"short.*": {"max_length": -2}}
    with pytest.raises(ValueError, match="max_length"):
        get_streams(InMemoryChannelLayer())


def test_the_system_check_names_a_bad_setting(settings: Any) -> None:
    from tether.checks import check_streams

    assert check_streams() == []
    settings.TETHER_STREAMS = {"chat.*": {"max_age": 0}}
    [error] = check_streams()
    assert error.id == "tether.E014"
    assert "max_age" in error.msg and "chat.*" in error.msg


def test_a_layer_without_a_streams_backend_is_refused() -> None:
    class Homemade(BaseChannelLayer):
        pass

    with pytest.raises(TypeError, match="no streams backend"):
        get_streams(Homemade())


def test_no_configured_layer_is_refused(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {}
    with pytest.raises(TypeError, match="CHANNEL_LAYERS"):
        get_streams()


def test_an_encrypting_redis_layer_is_refused() -> None:
    from tether.layers.redis import RedisChannelLayer

    with pytest.raises(TypeError, match="symmetric_encryption_keys"):
        get_streams(RedisChannelLayer(symmetric_encryption_keys=["secret"]))
