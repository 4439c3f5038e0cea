"""``TETHER_RATE_LIMITS`` and a consumer's ``rate_limits``: read, checked (tether.E011) and merged per class."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from tether.checks import check_rate_limits
from tether.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from tether.ratelimit import parse_rate, rate_limit_settings
from tether.ratelimit.config import limits_for


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("20/min", "must be a dict of limits"),
        ({"connect_per_ip": "20/fortnight"}, "\"connect_per_ip\": '20/fortnight' is not a rate"),
        ({"messages_per_conection": "10/s"}, "unknown key(s) ['messages_per_conection']"),
        ({"messages_per_user": 10}, '"messages_per_user": A rate is a string'),
        ({"store": "postgres://x"}, '"store" is "memory" or one Redis host'),
        ({"trusted_proxies": "1"}, '"trusted_proxies" is how many proxies'),
        ({"trusted_proxies": -1}, '"trusted_proxies" is how many proxies'),
        ({"prefix": "my prefix"}, '"prefix": prefix must be a non-empty string'),
    ],
)
def test_a_bad_setting_is_named_at_first_use_and_by_the_system_check(settings, value, named):
    settings.TETHER_RATE_LIMITS = value
    with pytest.raises(ImproperlyConfigured) as raised:
        rate_limit_settings()
    assert str(raised.value).startswith("TETHER_RATE_LIMITS: ")
    assert named in str(raised.value)
    [error] = check_rate_limits()
    assert (error.id, error.msg) == ("tether.E011", str(raised.value))
    assert '"count/period"' in error.hint


def test_a_good_setting_passes_the_check(settings):
    settings.TETHER_RATE_LIMITS = {
        "connect_per_ip": "20/min",
        "connect_per_user": None,
        "messages_per_connection": "10/s burst 20",
        "store": "redis://127.0.0.1:6379/0",
        "prefix": "site-a:limits",
        "trusted_proxies": 1,
    }
    assert check_rate_limits() == []
    config = rate_limit_settings()
    assert dict(config.rates) == {
        "connect_per_ip": parse_rate("20/min"),
        "messages_per_connection": parse_rate("10/s burst 20"),
    }
    assert config.store.describe() == "redis://127.0.0.1:6379/0"
    assert (config.prefix, config.trusted_proxies) == ("site-a:limits", 1)


def test_no_setting_means_no_limits_and_no_gate(settings):
    class Unlimited(AsyncWebsocketConsumer):
        pass

    assert check_rate_limits() == []
    assert limits_for(Unlimited) is None


def test_a_consumer_overrides_the_project_limits_with_buckets_of_its_own(settings):
    settings.TETHER_RATE_LIMITS = {"connect_per_ip": "20/min", "messages_per_connection": "10/s"}

    class Cursor(AsyncJsonWebsocketConsumer):
        rate_limits = {"messages_per_connection": "60/s", "connect_per_ip": None, "messages_per_user": "100/s"}

    class Plain(AsyncWebsocketConsumer):
        pass

    limits = limits_for(Cursor)
    assert limits is not None
    assert dict(limits.rates) == {
        "messages_per_connection": parse_rate("60/s"),
        "messages_per_user": parse_rate("100/s"),
    }
    assert (limits.connects, limits.messages) == (False, True)
    assert limits.namespaces["messages_per_connection"].endswith("Cursor")
    project = limits_for(Plain)
    assert project is not None and set(project.namespaces.values()) == {"project"}
    settings.TETHER_RATE_LIMITS = None  # the cached limits follow the setting
    assert limits_for(Plain) is None


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"messages_per_second": "1/s"}, "Broken.rate_limits has unknown limit(s) ['messages_per_second']"),
        ({"connect_per_ip": "1 per second"}, "Broken.rate_limits[\"connect_per_ip\"]: '1 per second' is not a rate"),
        ("10/s", "Broken.rate_limits must be a dict"),
    ],
)
def test_a_bad_override_fails_when_the_class_is_defined(overrides, named):
    with pytest.raises(ImproperlyConfigured) as raised:

        class Broken(AsyncWebsocketConsumer):
            rate_limits = overrides

    assert named in str(raised.value)


def test_as_asgi_refuses_rate_limits_as_a_keyword():
    with pytest.raises(TypeError, match=r"rate limits belong to the class. Define a subclass with rate_limits = "):
        AsyncWebsocketConsumer.as_asgi(rate_limits={"messages_per_connection": "1/s"})
    assert callable(AsyncJsonWebsocketConsumer.as_asgi(rate_limit_close_after=3))
