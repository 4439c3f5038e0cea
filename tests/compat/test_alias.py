"""tether.compat's import alias in this process: which names it answers for, what it returns, how it fails.

The real Channels 4.3.2 is installed in the test environment (other tests compare tether with it), so the ``alias``
fixture sets aside any real Channels modules already imported, installs the alias, and puts everything back after.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import PurePosixPath
from types import ModuleType

import pytest
from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

import tether
import tether.generic.websocket
from tether import compat
from tether.apps import TetherConfig
from tether.compat.alias import AliasFinder, tether_name_for
from tether.layers import InMemoryChannelLayer
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer


def _channels_modules() -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in sys.modules.items()
        if name in ("channels", "channels_redis") or name.startswith(("channels.", "channels_redis."))
    }


@pytest.fixture
def without_alias() -> Iterator[None]:
    """No alias and no Channels module imported during the test; the process's previous state restored after."""
    saved = _channels_modules()
    for name in saved:
        del sys.modules[name]
    compat.uninstall()
    try:
        yield
    finally:
        compat.uninstall()
        for name in _channels_modules():
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture
def alias(without_alias: None) -> None:
    compat.install()


def channels_432_modules() -> list[str]:
    """Every module of the installed Channels release, read from its file list (nothing of it is imported)."""
    names = []
    for file in importlib.metadata.files("channels") or []:
        path = PurePosixPath(str(file))
        if path.suffix == ".py" and path.parts[0] == "channels":
            parts = path.with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def test_channels_is_tether_itself(alias):
    import channels

    assert channels is tether
    assert channels.DEFAULT_CHANNEL_LAYER == "default"


def test_a_channels_submodule_is_the_same_module_object_as_tethers(alias):
    import channels.generic.websocket

    assert channels.generic.websocket is tether.generic.websocket
    assert channels.generic.websocket.AsyncWebsocketConsumer is tether.generic.websocket.AsyncWebsocketConsumer


def test_a_consumer_written_against_channels_is_a_tether_consumer(alias):
    from channels.generic.websocket import AsyncJsonWebsocketConsumer

    class PluginConsumer(AsyncJsonWebsocketConsumer):
        pass

    assert isinstance(PluginConsumer(), tether.generic.websocket.AsyncWebsocketConsumer)


def test_an_aliased_module_keeps_its_own_name_and_spec(alias):
    import channels.layers

    assert channels.layers.__name__ == "tether.layers"
    assert channels.layers.__spec__.name == "tether.layers"


@pytest.mark.parametrize("name", channels_432_modules())
def test_every_module_of_channels_4_3_2_imports_through_the_alias(alias, name):
    module = importlib.import_module(name)
    assert module is importlib.import_module(tether_name_for(name))


def test_channels_redis_layer_modules_are_tethers_redis_layers(alias):
    from channels_redis.core import RedisChannelLayer as core_layer
    from channels_redis.pubsub import RedisPubSubChannelLayer as pubsub_layer

    assert (core_layer, pubsub_layer) == (RedisChannelLayer, RedisPubSubChannelLayer)


def test_layer_backend_paths_of_a_channels_project_resolve_to_tethers_layers(alias):
    assert import_string("channels_redis.core.RedisChannelLayer") is RedisChannelLayer
    assert import_string("channels_redis.pubsub.RedisPubSubChannelLayer") is RedisPubSubChannelLayer
    assert import_string("channels.layers.InMemoryChannelLayer") is InMemoryChannelLayer


def test_a_channels_module_tether_lacks_is_an_import_error_naming_it_and_the_way_out(alias):
    with pytest.raises(ModuleNotFoundError, match=r"'channels\.nothing'.*tether has no module tether\.nothing") as err:
        import channels.nothing  # noqa: F401
    assert err.value.name == "channels.nothing"
    assert "replace that import, or run that package without the alias" in str(err.value)


def test_a_channels_redis_module_without_counterpart_points_at_tethers_redis_layers(alias):
    with pytest.raises(ModuleNotFoundError, match=r"'channels_redis\.serializers'.*tether\.layers\.redis"):
        import channels_redis.serializers  # noqa: F401


def test_packages_whose_names_only_start_with_channels_are_left_alone():
    assert tether_name_for("channelsmultiplexer") is None
    assert tether_name_for("channels_graphql_ws") is None
    assert tether_name_for("django.channels") is None


def test_channels_in_installed_apps_is_tethers_app_config(alias):
    config = AppConfig.create("channels")
    assert type(config) is TetherConfig
    assert (config.name, config.label) == ("tether", "tether")


def test_installing_twice_or_from_several_threads_puts_one_finder_in_place(alias):
    threads = [threading.Thread(target=compat.install) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(finder, AliasFinder) for finder in sys.meta_path) == 1
    assert isinstance(sys.meta_path[0], AliasFinder)


def test_install_refuses_once_the_real_channels_was_imported(without_alias):
    import channels.layers  # noqa: F401 - the real one: no alias yet

    with pytest.raises(
        ImproperlyConfigured, match=r"after the real Channels was imported \(channels, .*channels\.layers"
    ):
        compat.install()
    assert not compat.is_installed()


def test_install_warns_once_naming_the_installed_channels_it_hides(without_alias, caplog):
    real_location = importlib.metadata.distribution("channels").locate_file("channels")
    with caplog.at_level(logging.WARNING, logger="tether.compat"):
        compat.install()
        compat.install()
    hidden = [record.getMessage() for record in caplog.records if "channels package" in record.getMessage()]
    assert hidden == [
        f"tether.compat: 'import channels' now gives tether; the channels package installed at {real_location} is "
        f"hidden. Uninstall it (pip uninstall channels) to silence this warning."
    ]


def test_uninstall_lets_channels_mean_the_real_channels_again(alias):
    import channels

    assert channels is tether
    compat.uninstall()
    assert not compat.is_installed()
    import channels

    assert channels is not tether
    assert channels.__version__ == "4.3.2"
