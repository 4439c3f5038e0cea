"""Choosing a presence backend and its options: the default layer, TETHER_PRESENCE, and what is refused."""

from __future__ import annotations

import pytest

from tether.layers import get_channel_layer
from tether.layers.base import BaseChannelLayer
from tether.presence import DEFAULT_TTL, get_presence
from tether.presence.memory import MemoryPresence


def test_the_default_layer_s_presence_takes_tether_presence(settings):
    settings.TETHER_PRESENCE = {"ttl": 10, "heartbeat": 2, "batch_window": 0.1, "max_metadata_size": 100}
    presence = get_presence()
    assert isinstance(presence, MemoryPresence)
    assert presence.layer is get_channel_layer()
    assert (presence.ttl, presence.heartbeat, presence.batch_window, presence.max_metadata_size) == (10, 2, 0.1, 100)


def test_without_the_setting_the_defaults_apply():
    assert get_presence().ttl == DEFAULT_TTL


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ({"ttl": 5, "hearbeat": 1}, TypeError, "unknown key.*hearbeat"),
        ([("ttl", 5)], TypeError, "must be a dict"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"batch_window": 60}, ValueError, "batch_window"),
        ({"max_metadata_size": "4k"}, ValueError, "max_metadata_size"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(settings, value, error, match):
    settings.TETHER_PRESENCE = value
    with pytest.raises(error, match=match):
        get_presence()


def test_a_layer_without_a_presence_backend_is_refused():
    class Homemade(BaseChannelLayer):
        pass

    with pytest.raises(TypeError, match="no presence backend"):
        get_presence(Homemade())


def test_no_configured_layer_is_refused(settings):
    settings.CHANNEL_LAYERS = {}
    with pytest.raises(TypeError, match="CHANNEL_LAYERS"):
        get_presence()


def test_the_system_check_names_a_bad_setting(settings):
    from tether.checks import check_presence

    assert check_presence() == []
    settings.TETHER_PRESENCE = {"ttl": 4, "heartbeat": 3}
    [error] = check_presence()
    assert error.id == "tether.E013"
    assert "heartbeat" in error.msg
