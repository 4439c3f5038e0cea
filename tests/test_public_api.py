"""The public API contract of /work/shared/API.md: every documented module and name exists, and says what it does.

A Channels project moves over by replacing ``channels`` with ``tether`` in its imports, so a name that goes missing
or moves is a broken program for somebody. These tests fail when the module table and the code disagree.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps

import tether
from tether.exceptions import InvalidChannelLayerError, RequestAborted, RequestTimeout

#: The module table of API.md, without ``tether.layers.redis`` (it needs the ``redis`` extra; see below).
PUBLIC_NAMES: dict[str, list[str]] = {
    "tether": ["__version__", "DEFAULT_CHANNEL_LAYER"],
    "tether.apps": ["TetherConfig"],
    "tether.exceptions": [
        "RequestAborted",
        "RequestTimeout",
        "InvalidChannelLayerError",
        "AcceptConnection",
        "DenyConnection",
        "ChannelFull",
        "MessageTooLarge",
        "StopConsumer",
    ],
    "tether.consumer": ["get_handler_name", "AsyncConsumer", "SyncConsumer"],
    "tether.generic.websocket": [
        "WebsocketConsumer",
        "AsyncWebsocketConsumer",
        "JsonWebsocketConsumer",
        "AsyncJsonWebsocketConsumer",
    ],
    "tether.generic.http": ["AsyncHttpConsumer"],
    "tether.routing": ["get_default_application", "ProtocolTypeRouter", "URLRouter", "ChannelNameRouter"],
    "tether.middleware": ["BaseMiddleware"],
    "tether.sessions": ["CookieMiddleware", "SessionMiddleware", "SessionMiddlewareStack"],
    "tether.auth": ["get_user", "login", "logout", "AuthMiddleware", "AuthMiddlewareStack"],
    "tether.security.websocket": ["OriginValidator", "AllowedHostsOriginValidator", "WebsocketDenier"],
    "tether.db": ["database_sync_to_async", "aclose_old_connections", "close_old_connections"],
    "tether.layers": ["get_channel_layer", "channel_layers", "BaseChannelLayer", "InMemoryChannelLayer"],
    "tether.worker": ["Worker"],
    "tether.testing": [
        "ApplicationCommunicator",
        "HttpCommunicator",
        "WebsocketCommunicator",
        "ChannelsLiveServerTestCase",
    ],
    "tether.utils": ["await_many_dispatch", "name_that_thing"],
}

REDIS_NAMES = ["RedisChannelLayer", "RedisPubSubChannelLayer"]

#: Methods API.md names on the public classes: users override or call them, so each says what it does.
DOCUMENTED_METHODS: dict[str, list[str]] = {
    "tether.generic.websocket.WebsocketConsumer": ["connect", "accept", "receive", "send", "close", "disconnect"],
    "tether.generic.websocket.AsyncWebsocketConsumer": ["connect", "accept", "receive", "send", "close", "disconnect"],
    "tether.generic.websocket.JsonWebsocketConsumer": ["receive_json", "send_json", "decode_json", "encode_json"],
    "tether.generic.websocket.AsyncJsonWebsocketConsumer": ["receive_json", "send_json", "decode_json", "encode_json"],
    "tether.generic.http.AsyncHttpConsumer": ["handle", "send_headers", "send_body", "send_response", "disconnect"],
    "tether.layers.base.BaseChannelLayer": [
        "send",
        "receive",
        "new_channel",
        "group_add",
        "group_discard",
        "group_send",
        "flush",
        "close",
        "require_valid_channel_name",
        "require_valid_group_name",
        "non_local_name",
        "compile_capacities",
        "get_capacity",
    ],
    "tether.testing.websocket.WebsocketCommunicator": [
        "connect",
        "send_to",
        "send_json_to",
        "receive_from",
        "receive_json_from",
        "receive_nothing",
        "disconnect",
    ],
    "tether.testing.http.HttpCommunicator": ["get_response"],
    "tether.testing.application.ApplicationCommunicator": ["send_input", "receive_output", "wait"],
}


def public_objects(module_name: str) -> list[tuple[str, object]]:
    """The classes and functions a tether module exports in ``__all__`` and defines itself (not re-exported ones)."""
    module = importlib.import_module(module_name)
    objects = [(name, getattr(module, name)) for name in module.__all__]
    return [
        (name, obj)
        for name, obj in objects
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.startswith("tether")
    ]


def class_by_path(path: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


@pytest.mark.parametrize(("module_name", "names"), PUBLIC_NAMES.items(), ids=list(PUBLIC_NAMES))
def test_module_exports_the_documented_names(module_name, names):
    module = importlib.import_module(module_name)
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == [], f"{module_name} lacks {missing}"
    unlisted = [name for name in names if not name.startswith("__") and name not in module.__all__]
    assert unlisted == [], f"{module_name}.__all__ lacks {unlisted}"


@pytest.mark.parametrize("module_name", PUBLIC_NAMES, ids=list(PUBLIC_NAMES))
def test_module_says_why_it_exists(module_name):
    assert inspect.getdoc(importlib.import_module(module_name))


@pytest.mark.parametrize("module_name", PUBLIC_NAMES, ids=list(PUBLIC_NAMES))
def test_every_public_class_and_function_has_a_docstring(module_name):
    undocumented = [name for name, obj in public_objects(module_name) if not inspect.getdoc(obj)]
    assert undocumented == []


@pytest.mark.parametrize(("class_path", "methods"), DOCUMENTED_METHODS.items(), ids=list(DOCUMENTED_METHODS))
def test_documented_methods_have_docstrings(class_path, methods):
    cls = class_by_path(class_path)
    undocumented = [method for method in methods if not inspect.getdoc(getattr(cls, method))]
    assert undocumented == []


def test_redis_layers_are_exported_with_docstrings():
    redis_layers = pytest.importorskip("tether.layers.redis", reason="the redis extra is not installed")
    for name in REDIS_NAMES:
        assert name in redis_layers.__all__
        assert inspect.getdoc(getattr(redis_layers, name)), f"{name} has no docstring"


def test_version_is_a_dotted_string():
    assert isinstance(tether.__version__, str)
    assert tether.__version__.split(".")[0].isdigit()


def test_default_channel_layer_alias_is_default():
    assert tether.DEFAULT_CHANNEL_LAYER == "default"


def test_request_timeout_is_a_request_aborted():
    assert issubclass(RequestTimeout, RequestAborted)


def test_invalid_channel_layer_error_is_a_value_error():
    assert issubclass(InvalidChannelLayerError, ValueError)


def test_app_config_has_the_label_tether():
    assert apps.get_app_config("tether").name == "tether"


def test_package_ships_py_typed_marker():
    assert (Path(tether.__file__).parent / "py.typed").is_file()


def test_package_data_includes_py_typed():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    package_data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["tether"]


def test_channels_app_config_name_leaves_djangos_choice_on_tethers_config():
    from tether.apps import ChannelsConfig, TetherConfig

    assert issubclass(ChannelsConfig, TetherConfig)
    assert type(apps.get_app_config("tether")) is TetherConfig


#: What a Channels project imports at the top of ``asgi.py``, ``routing.py`` and settings, before Django is set up.
IMPORTED_BEFORE_SETUP = [
    "tether",
    "tether.auth",
    "tether.consumer",
    "tether.db",
    "tether.exceptions",
    "tether.generic.http",
    "tether.generic.websocket",
    "tether.layers",
    "tether.layers.redis",
    "tether.middleware",
    "tether.routing",
    "tether.security.websocket",
    "tether.sessions",
    "tether.testing",
    "tether.utils",
    "tether.worker",
]


def test_modules_a_project_imports_at_the_top_of_asgi_py_import_before_django_is_set_up():
    """Channels' tutorial ``asgi.py`` imports the auth middleware before ``get_asgi_application()``."""
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code, *IMPORTED_BEFORE_SETUP],
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_importing_tether_testing_makes_tether_routing_available_as_channels_testing_does():
    code = "import tether.testing, tether\nprint(tether.routing.URLRouter.__name__)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent.parent, env=env, capture_output=True, text=True
    )
    assert result.stdout.strip() == "URLRouter", result.stderr
