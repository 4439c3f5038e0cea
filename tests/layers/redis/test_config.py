"""The Redis layers' CONFIG: every channels_redis host form, tether's own options, and clear errors for the rest."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tether.exceptions import InvalidChannelLayerError
from tether.layers import channel_layers
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from tether.layers.redis.config import parse_hosts


def test_hosts_default_to_localhost_6379():
    [spec] = parse_hosts(None)
    assert spec.kind == "standalone"
    assert spec.url == "redis://localhost:6379"


def test_hosts_accept_urls_of_every_scheme():
    specs = parse_hosts(["redis://a:6379/1", "rediss://b:6380", "unix:///run/redis.sock?db=2"])
    assert [spec.url for spec in specs] == ["redis://a:6379/1", "rediss://b:6380", "unix:///run/redis.sock?db=2"]
    assert {spec.kind for spec in specs} == {"standalone"}


def test_hosts_accept_host_port_pairs():
    specs = parse_hosts([("10.0.0.1", 6379), ["::1", 6380]])
    assert [spec.url for spec in specs] == ["redis://10.0.0.1:6379", "redis://[::1]:6380"]


def test_a_dict_host_keeps_its_connection_options():
    [spec] = parse_hosts([{"address": "redis://a:6379", "password": "s3cret", "db": 3}])
    assert spec.url == "redis://a:6379"
    assert spec.options == {"password": "s3cret", "db": 3}


def test_a_dict_host_with_sentinels_is_a_sentinel_master():
    [spec] = parse_hosts(
        [{"sentinels": [("s1", 26379), "s2:26380"], "master_name": "main", "sentinel_kwargs": {"password": "x"}}]
    )
    assert spec.kind == "sentinel"
    assert spec.sentinels == (("s1", 26379), ("s2", 26380))
    assert spec.master_name == "main"
    assert spec.sentinel_options == {"password": "x"}


def test_a_cluster_is_one_entry_flagged_in_the_dict_or_the_url():
    assert parse_hosts([{"address": "redis://a:7000", "cluster": True}])[0].kind == "cluster"
    [spec] = parse_hosts(["redis://a:7000/?cluster=true"])
    assert spec.kind == "standalone"  # a plain string entry is never a cluster...
    [spec] = parse_hosts([{"address": "redis://a:7000/?cluster=true"}])
    assert spec.kind == "cluster"  # ...but the flag works in a dict's address
    assert "cluster" not in spec.url


def test_the_password_never_shows_in_a_host_description():
    [spec] = parse_hosts(["redis://user:hunter2@cache.internal:6379/0"])
    assert "hunter2" not in spec.describe()
    assert "cache.internal:6379" in spec.describe()


@pytest.mark.parametrize(
    ("hosts", "error", "match"),
    [
        ([], ValueError, "non-empty list"),
        (["http://a:6379"], ValueError, "redis://"),
        ([("a", "6379")], ValueError, r"\(host, port\) pair"),
        ([42], TypeError, "URL string"),
        ([{"sentinels": [("s", 26379)]}], ValueError, "master_name"),
        ([{"sentinels": [], "master_name": "m"}], ValueError, "non-empty list"),
        ([{"sentinels": [("s", 26379)], "master_name": "m", "address": "redis://a"}], ValueError, "both"),
        ([{"address": "redis://a:7000", "cluster": True}, "redis://b:6379"], ValueError, "only entry"),
        ([{"address": "unix:///tmp/r.sock", "cluster": True}], ValueError, "TCP"),
        (["redis://a:6379", ("a", 6379)], ValueError, "same server twice"),
    ],
)
def test_invalid_hosts_are_refused_with_a_message_that_names_the_problem(hosts, error, match):
    with pytest.raises(error, match=match):
        parse_hosts(hosts)


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
def test_an_unknown_option_is_refused_with_the_list_of_known_ones(layer_class):
    with pytest.raises(TypeError, match=r"unknown CONFIG option\(s\) \['capacityy'\].*channel_capacity"):
        layer_class(capacityy=5)


def test_a_misspelt_connection_option_fails_when_the_layer_is_built():
    with pytest.raises(TypeError, match="Invalid connection option"):
        RedisChannelLayer(hosts=[{"address": "redis://127.0.0.1:6379", "pasword": "x"}])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"prefix": "has space"}, "prefix"),
        ({"prefix": "glob*"}, "prefix"),
        ({"expiry": 0}, "expiry"),
        ({"group_expiry": -1}, "group_expiry"),
        ({"capacity": 0}, "capacity"),
        ({"unavailable_timeout": 0}, "unavailable_timeout"),
        ({"max_message_size": 1.5}, "max_message_size"),
        ({"inbox_capacity": 0}, "inbox_capacity"),
        ({"random_prefix_length": 0}, "random_prefix_length"),
    ],
)
def test_invalid_option_values_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        RedisChannelLayer(**options)


def test_encryption_keys_must_be_a_list():
    with pytest.raises(TypeError, match="list of secrets"):
        RedisChannelLayer(symmetric_encryption_keys="just-one-string")


def test_the_pubsub_layer_accepts_a_cluster_for_sharded_pubsub():
    layer = RedisPubSubChannelLayer(hosts=[{"address": "redis://127.0.0.1:7000", "cluster": True}])
    assert [spec.kind for spec in layer.hosts] == ["cluster"]


def test_defaults_match_channels_redis():
    layer = RedisChannelLayer()
    assert (layer.prefix, layer.expiry, layer.group_expiry, layer.capacity) == ("asgi", 60, 86400, 100)
    assert layer.extensions == ["groups", "flush"]
    assert len(layer.client_id) == 12


def test_the_layer_is_configured_from_channel_layers_by_its_backend_path():
    config = {
        "BACKEND": "tether.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [("127.0.0.1", 6379)], "prefix": "tether-cfg", "capacity": 7},
    }
    with override_settings(CHANNEL_LAYERS={"default": config}):
        layer = channel_layers["default"]
        assert isinstance(layer, RedisChannelLayer)
        assert layer.capacity == 7


def test_a_bad_config_in_channel_layers_is_an_invalid_channel_layer_error():
    config = {"BACKEND": "tether.layers.redis.RedisPubSubChannelLayer", "CONFIG": {"hosts": ["http://x"]}}
    with (
        override_settings(CHANNEL_LAYERS={"default": config}),
        pytest.raises(InvalidChannelLayerError, match="redis://"),
    ):
        channel_layers["default"]


def test_a_unix_socket_host_is_described_by_its_path():
    [spec] = parse_hosts(["unix:///run/redis/redis.sock?db=1"])
    assert spec.describe() == "unix:///run/redis/redis.sock"
