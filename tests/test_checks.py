"""tether's system checks: each misconfiguration gets its id and a message that says what to change."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.checks.registry import registry
from django.test import override_settings

from tether import checks
from tether.checks import worker_processes_from_environment

IN_MEMORY = {"default": {"BACKEND": "tether.layers.InMemoryChannelLayer"}}


def tether_messages():
    return run_checks(tags=["tether"])


def ids(messages):
    return [message.id for message in messages]


@pytest.fixture(autouse=True)
def single_process_environment(monkeypatch):
    """The checks read worker counts from the environment: start each test from a single-process one."""
    for name in ("WEB_CONCURRENCY", "UVICORN_WORKERS", "GRANIAN_WORKERS", "GUNICORN_CMD_ARGS"):
        monkeypatch.delenv(name, raising=False)


def test_the_test_settings_pass_every_tether_check():
    assert tether_messages() == []


def test_every_check_is_registered_under_the_tether_tag():
    registered = {check for check in registry.get_checks() if "tether" in getattr(check, "tags", ())}
    assert registered == {
        checks.check_asgi_application,
        checks.check_channel_layers,
        checks.check_drain,
        checks.check_follow_login_layer,
        checks.check_in_memory_layer_with_several_processes,
        checks.check_limits,
        checks.check_presence,
        checks.check_rate_limits,
        checks.check_runserver_is_tethers,
        checks.check_streams,
        checks.check_websocket_origins,
    }


@override_settings(ASGI_APPLICATION=None)
def test_missing_asgi_application_is_e001():
    [error] = tether_messages()
    assert error.id == "tether.E001"
    assert "ASGI_APPLICATION = 'yourproject.asgi.application'" in error.hint


@override_settings(ASGI_APPLICATION="tests.no_such_module.application")
def test_asgi_application_in_a_missing_module_is_e002():
    [error] = tether_messages()
    assert error.id == "tether.E002"
    assert "'tests.no_such_module.application' cannot be imported" in error.msg
    assert "No module named 'tests.no_such_module'" in error.msg


@override_settings(ASGI_APPLICATION="tests.asgi.no_such_name")
def test_asgi_application_naming_a_missing_attribute_is_e002():
    [error] = tether_messages()
    assert error.id == "tether.E002"
    assert "has no attribute 'no_such_name'" in error.msg


@override_settings(ASGI_APPLICATION="tests.consumers.EchoConsumer")
def test_asgi_application_naming_a_consumer_class_is_e003():
    [error] = tether_messages()
    assert error.id == "tether.E003"
    assert "EchoConsumer.as_asgi()" in error.hint


@override_settings(ASGI_APPLICATION="tests.settings.SECRET_KEY")
def test_asgi_application_that_is_not_callable_is_e003():
    [error] = tether_messages()
    assert error.id == "tether.E003"
    assert "not an ASGI application" in error.msg


@override_settings(CHANNEL_LAYERS=["tether.layers.InMemoryChannelLayer"])
def test_channel_layers_that_is_not_a_dict_is_e004():
    [error] = tether_messages()
    assert error.id == "tether.E004"
    assert "must be a dict of alias" in error.msg


@override_settings(CHANNEL_LAYERS={"default": {"CONFIG": {}}})
def test_layer_without_backend_is_e005():
    [error] = tether_messages()
    assert error.id == "tether.E005"
    assert "CHANNEL_LAYERS['default'] must be a dict with a BACKEND" in error.msg


@override_settings(CHANNEL_LAYERS={"default": "tether.layers.InMemoryChannelLayer"})
def test_layer_settings_that_are_not_a_dict_is_e005():
    assert ids(tether_messages()) == ["tether.E005"]


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.NoSuchLayer"}})
def test_backend_that_cannot_be_imported_is_e006():
    [error] = tether_messages()
    assert error.id == "tether.E006"
    assert "'tether.layers.NoSuchLayer' cannot be imported" in error.msg


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.InMemoryChannelLayer", "CONFIG": {"capacity": -1}}}
)
def test_config_the_backend_refuses_is_e007():
    [error] = tether_messages()
    assert error.id == "tether.E007"
    assert "CHANNEL_LAYERS['default']['CONFIG'] is refused" in error.msg
    assert "capacity" in error.msg


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.InMemoryChannelLayer", "CONFIG": {"hosts": ["x"]}}}
)
def test_config_with_an_option_the_backend_does_not_take_is_e007():
    [error] = tether_messages()
    assert error.id == "tether.E007"
    assert "hosts" in error.msg


@override_settings(
    CHANNEL_LAYERS={
        "default": {"BACKEND": "tether.layers.InMemoryChannelLayer", "TEST_CONFIG": {"expiry": "soon"}},
    }
)
def test_test_config_the_backend_refuses_is_e007():
    [error] = tether_messages()
    assert error.id == "tether.E007"
    assert "['TEST_CONFIG']" in error.msg


@override_settings(
    CHANNEL_LAYERS={
        "default": {"BACKEND": "tether.layers.InMemoryChannelLayer"},
        "broken": {"BACKEND": "nowhere.Layer"},
        "bad": {"BACKEND": "tether.layers.InMemoryChannelLayer", "CONFIG": {"expiry": 0}},
    }
)
def test_every_layer_alias_is_checked():
    assert ids(tether_messages()) == ["tether.E006", "tether.E007"]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("TETHER_MAX_MESSAGE_SIZE", "1MB", "TETHER_MAX_MESSAGE_SIZE must be a positive number of bytes"),
        ("TETHER_WS_PING_INTERVAL", 0, "TETHER_WS_PING_INTERVAL must be a positive number of seconds"),
        ("TETHER_WS_PING_TIMEOUT", None, "TETHER_WS_PING_TIMEOUT must be a positive number of seconds"),
        ("TETHER_HANDSHAKE_TIMEOUT", "5", "TETHER_HANDSHAKE_TIMEOUT must be a positive number of seconds"),
        ("TETHER_OUTBOUND_QUEUE_SIZE", 0, "TETHER_OUTBOUND_QUEUE_SIZE must be a positive number of messages"),
        ("TETHER_SLOW_CLIENT_POLICY", "drop", "TETHER_SLOW_CLIENT_POLICY must be one of 'disconnect', 'drop_oldest'"),
    ],
)
def test_a_limit_that_is_not_a_positive_number_is_e010(setting, value, message):
    with override_settings(**{setting: value}):
        [error] = tether_messages()
    assert error.id == "tether.E010"
    assert message in error.msg


@override_settings(CHANNEL_LAYERS=IN_MEMORY)
def test_in_memory_layer_with_web_concurrency_above_one_is_w001(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    [warning] = tether_messages()
    assert warning.id == "tether.W001"
    assert "4 server processes (WEB_CONCURRENCY=4)" in warning.msg
    assert "tether.layers.redis.RedisChannelLayer" in warning.hint


@override_settings(CHANNEL_LAYERS=IN_MEMORY)
def test_in_memory_layer_with_one_worker_process_passes(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    assert tether_messages() == []


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.redis.RedisChannelLayer"}})
def test_shared_layer_with_several_worker_processes_has_no_w001(monkeypatch):
    pytest.importorskip("tether.layers.redis")
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert "tether.W001" not in ids(tether_messages())


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WEB_CONCURRENCY": "3"}, (3, "WEB_CONCURRENCY=3")),
        ({"UVICORN_WORKERS": "2"}, (2, "UVICORN_WORKERS=2")),
        ({"GRANIAN_WORKERS": "4"}, (4, "GRANIAN_WORKERS=4")),
        ({"GUNICORN_CMD_ARGS": "--bind 0.0.0.0:80 --workers 5"}, (5, "GUNICORN_CMD_ARGS workers=5")),
        ({"GUNICORN_CMD_ARGS": "-w 6"}, (6, "GUNICORN_CMD_ARGS workers=6")),
        ({"GUNICORN_CMD_ARGS": "-w7"}, (7, "GUNICORN_CMD_ARGS workers=7")),
        ({"GUNICORN_CMD_ARGS": "--workers=8"}, (8, "GUNICORN_CMD_ARGS workers=8")),
        ({"WEB_CONCURRENCY": "2", "UVICORN_WORKERS": "4"}, (4, "UVICORN_WORKERS=4")),
        ({"WEB_CONCURRENCY": "many"}, None),
        ({"GUNICORN_CMD_ARGS": "--workers 'unbalanced"}, None),
    ],
)
def test_worker_processes_are_read_from_the_environment(environ, expected):
    assert worker_processes_from_environment(environ) == expected


@override_settings(
    INSTALLED_APPS=["django.contrib.staticfiles", "tether", "django.contrib.auth", "django.contrib.contenttypes"]
)
def test_staticfiles_before_tether_is_w002_since_its_runserver_wins():
    [warning] = tether_messages()
    assert warning.id == "tether.W002"
    assert "runserver comes from 'django.contrib.staticfiles'" in warning.msg
    assert warning.hint == "Move 'tether' above 'django.contrib.staticfiles' in INSTALLED_APPS."


@override_settings(
    INSTALLED_APPS=["tether", "django.contrib.staticfiles", "django.contrib.auth", "django.contrib.contenttypes"]
)
def test_tether_before_staticfiles_passes():
    assert tether_messages() == []


@override_settings(ALLOWED_HOSTS=["*"])
def test_any_host_without_exact_origins_is_w003():
    [warning] = tether_messages()
    assert warning.id == "tether.W003"
    assert "pages on any site open WebSockets" in warning.msg
    assert "TETHER_ALLOWED_ORIGINS" in warning.hint
    assert "ExactOriginValidator" in warning.hint


@override_settings(ALLOWED_HOSTS=["example.com", "*"], DEBUG=True)
def test_any_host_is_w003_with_debug_on_too():
    assert ids(tether_messages()) == ["tether.W003"]


@override_settings(ALLOWED_HOSTS=[], DEBUG=False)
def test_no_host_without_debug_and_without_exact_origins_is_w004():
    [warning] = tether_messages()
    assert warning.id == "tether.W004"
    assert "refuses every WebSocket handshake" in warning.msg


@override_settings(ALLOWED_HOSTS=[], DEBUG=True)
def test_no_host_with_debug_on_passes_since_local_origins_are_allowed():
    assert tether_messages() == []


@pytest.mark.parametrize("hosts", [["*"], []])
def test_exact_origins_configured_silence_w003_and_w004(hosts):
    with override_settings(ALLOWED_HOSTS=hosts, DEBUG=False, TETHER_ALLOWED_ORIGINS=["https://example.com"]):
        assert tether_messages() == []


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("https://example.com", "must be a list of origins, not str"),
        (["https://example.com", "example.com"], "TETHER_ALLOWED_ORIGINS[1] 'example.com' is not an origin"),
        (["wss://example.com"], "write 'https://example.com'"),
        ([None], "TETHER_ALLOWED_ORIGINS[0] Allowed origins are strings"),
    ],
)
def test_allowed_origins_that_are_not_origins_are_e008(setting, message):
    with override_settings(TETHER_ALLOWED_ORIGINS=setting):
        [error] = tether_messages()
    assert error.id == "tether.E008"
    assert message in error.msg
    assert "scheme://host[:port]" in error.hint


@override_settings(CHANNEL_LAYERS=IN_MEMORY, TETHER_FOLLOW_LOGIN_LAYER="revocations")
def test_follow_login_layer_that_is_not_configured_is_e009():
    [error] = tether_messages()
    assert error.id == "tether.E009"
    assert "'revocations', which names no layer of CHANNEL_LAYERS" in error.msg


@pytest.mark.parametrize(
    "overrides",
    [{"TETHER_FOLLOW_LOGIN_LAYER": "default"}, {"TETHER_FOLLOW_LOGIN": False, "TETHER_FOLLOW_LOGIN_LAYER": 3}],
)
def test_follow_login_layer_that_is_configured_or_unused_passes(overrides):
    with override_settings(CHANNEL_LAYERS=IN_MEMORY, **overrides):
        assert tether_messages() == []
