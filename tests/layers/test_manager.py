"""Building layers from ``CHANNEL_LAYERS``: ``get_channel_layer``, the ``channel_layers`` manager, and its errors."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tether.exceptions import InvalidChannelLayerError
from tether.layers import InMemoryChannelLayer, channel_layers, get_channel_layer

INMEMORY = "tether.layers.InMemoryChannelLayer"


class LayerThatFailsWithKeyError(InMemoryChannelLayer):
    """A backend whose construction fails with a KeyError, as a buggy third-party layer might."""

    def __init__(self, **options):
        raise KeyError("hosts")


def test_get_channel_layer_returns_the_default_layer_from_settings():
    layer = get_channel_layer()
    assert isinstance(layer, InMemoryChannelLayer)


def test_layers_are_built_on_first_use_not_before():
    assert channel_layers.backends == {}
    layer = get_channel_layer()
    assert channel_layers.backends == {"default": layer}


def test_get_channel_layer_returns_the_same_layer_every_time():
    assert get_channel_layer() is get_channel_layer()


def test_get_channel_layer_returns_none_for_an_alias_that_is_not_configured():
    assert get_channel_layer("nope") is None


def test_channel_layers_raises_key_error_for_an_alias_that_is_not_configured():
    with pytest.raises(KeyError):
        channel_layers["nope"]


def test_each_alias_gets_its_own_layer():
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY}, "other": {"BACKEND": INMEMORY}}):
        assert get_channel_layer("other") is not get_channel_layer("default")
        assert get_channel_layer("other") is get_channel_layer("other")


def test_config_options_are_passed_to_the_layer():
    config = {"expiry": 5, "group_expiry": 30, "capacity": 7, "channel_capacity": {"big.*": 70}}
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY, "CONFIG": config}}):
        layer = get_channel_layer()
        assert (layer.expiry, layer.group_expiry, layer.capacity) == (5, 30, 7)
        assert layer.get_capacity("big.one") == 70


def test_changing_channel_layers_with_override_settings_builds_a_new_layer():
    before = get_channel_layer()
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY, "CONFIG": {"capacity": 3}}}):
        inside = get_channel_layer()
        assert inside is not before
        assert inside.capacity == 3
    after = get_channel_layer()
    assert after is not inside
    assert after.capacity == 100


def test_changing_another_setting_keeps_the_built_layers():
    before = get_channel_layer()
    with override_settings(USE_TZ=False):
        assert get_channel_layer() is before


def test_aliases_removed_by_override_settings_are_gone():
    with override_settings(CHANNEL_LAYERS={"other": {"BACKEND": INMEMORY}}):
        assert get_channel_layer() is None
        assert isinstance(get_channel_layer("other"), InMemoryChannelLayer)


def test_no_channel_layers_setting_means_no_layer():
    with override_settings(CHANNEL_LAYERS={}):
        assert get_channel_layer() is None
        assert "default" not in channel_layers


def test_make_test_backend_builds_the_layer_from_test_config():
    layers = {"default": {"BACKEND": INMEMORY, "CONFIG": {"capacity": 50}, "TEST_CONFIG": {"capacity": 5}}}
    with override_settings(CHANNEL_LAYERS=layers):
        assert channel_layers.make_test_backend("default").capacity == 5
        assert channel_layers.make_backend("default").capacity == 50


def test_make_test_backend_without_test_config_says_to_add_one():
    with pytest.raises(InvalidChannelLayerError, match=r"CHANNEL_LAYERS\['default'\] has no TEST_CONFIG"):
        channel_layers.make_test_backend("default")


def test_set_puts_a_layer_in_place_of_an_alias_and_returns_the_one_it_replaced():
    built = get_channel_layer()
    mine = InMemoryChannelLayer(capacity=2)
    assert channel_layers.set("default", mine) is built
    assert get_channel_layer() is mine


def test_set_can_provide_a_layer_for_an_alias_that_is_not_configured():
    mine = InMemoryChannelLayer()
    assert channel_layers.set("extra", mine) is None
    assert get_channel_layer("extra") is mine


def test_set_none_forgets_the_layer_so_the_next_use_builds_a_new_one():
    built = get_channel_layer()
    assert channel_layers.set("default", None) is built
    assert get_channel_layer() is not built


def test_missing_backend_is_a_clear_error():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"CONFIG": {}}}),
        pytest.raises(InvalidChannelLayerError, match=r"CHANNEL_LAYERS\['default'\] needs a BACKEND"),
    ):
        get_channel_layer()


def test_backend_that_is_not_a_dotted_path_string_is_a_clear_error():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": InMemoryChannelLayer}}),
        pytest.raises(InvalidChannelLayerError, match="needs a BACKEND given as a dotted path"),
    ):
        get_channel_layer()


def test_unimportable_backend_is_a_clear_error_naming_the_path():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.NoSuchLayer"}}),
        pytest.raises(InvalidChannelLayerError, match=r"Cannot import BACKEND 'tether\.layers\.NoSuchLayer'"),
    ):
        get_channel_layer()


def test_backend_from_a_missing_module_is_a_clear_error():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "no_such_package.Layer"}}),
        pytest.raises(InvalidChannelLayerError, match=r"Cannot import BACKEND 'no_such_package\.Layer'"),
    ):
        get_channel_layer()


def test_backend_that_names_something_other_than_a_class_is_a_clear_error():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tether.DEFAULT_CHANNEL_LAYER"}}),
        pytest.raises(InvalidChannelLayerError, match="is a str, not a channel layer class"),
    ):
        get_channel_layer()


def test_unknown_config_option_is_a_clear_error_naming_it():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY, "CONFIG": {"capacty": 10}}}),
        pytest.raises(InvalidChannelLayerError, match=r"unknown CONFIG option\(s\) \['capacty'\]"),
    ):
        get_channel_layer()


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("capacity", 0, "capacity must be a positive int"),
        ("expiry", -1, "expiry must be a positive number"),
        ("group_expiry", "1 day", "group_expiry must be a positive number"),
        ("channel_capacity", {"chat.*": 0}, r"channel_capacity\['chat.\*'\] must be a positive int"),
    ],
)
def test_bad_config_value_is_a_clear_error_naming_the_option(option, value, complaint):
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY, "CONFIG": {option: value}}}),
        pytest.raises(InvalidChannelLayerError, match=complaint),
    ):
        get_channel_layer()


def test_config_that_is_not_a_dict_is_a_clear_error():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY, "CONFIG": ["capacity", 5]}}),
        pytest.raises(InvalidChannelLayerError, match=r"\['CONFIG'\] must be a dict"),
    ):
        get_channel_layer()


def test_alias_entry_that_is_not_a_dict_is_a_clear_error():
    with (
        override_settings(CHANNEL_LAYERS={"default": INMEMORY}),
        pytest.raises(InvalidChannelLayerError, match=r"CHANNEL_LAYERS\['default'\] must be a dict"),
    ):
        get_channel_layer()


def test_channel_layers_setting_that_is_not_a_dict_is_a_clear_error():
    with (
        override_settings(CHANNEL_LAYERS=[INMEMORY]),
        pytest.raises(InvalidChannelLayerError, match="CHANNEL_LAYERS must be a dict"),
    ):
        get_channel_layer()


def test_get_channel_layer_does_not_hide_a_key_error_raised_while_building_the_layer():
    backend = f"{__name__}.LayerThatFailsWithKeyError"
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": backend}}), pytest.raises(KeyError, match="hosts"):
        get_channel_layer()


def test_a_failed_build_is_not_cached_so_a_fixed_setting_works():
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY, "CONFIG": {"capacity": 0}}}),
        pytest.raises(InvalidChannelLayerError),
    ):
        get_channel_layer()
        assert "default" not in channel_layers.backends
