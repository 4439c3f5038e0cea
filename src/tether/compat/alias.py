"""The import alias: ``import channels...`` and ``import channels_redis...`` give tether's modules.

Packages written for Django Channels (djangochannelsrestframework, channelsmultiplexer, GraphQL integrations...)
import ``channels.generic.websocket``, ``channels.db`` or ``channels.layers``. Rather than fork them, a project can
call ``install()`` once, before anything imports ``channels``, and those imports resolve to tether.

How it works: a finder placed first on ``sys.meta_path`` answers for every ``channels`` and ``channels.*`` name, and
for the three public ``channels_redis`` modules. Its loader imports the tether module of the same path and hands
that very module object back, so ``channels.generic.websocket.AsyncWebsocketConsumer is
tether.generic.websocket.AsyncWebsocketConsumer`` and ``isinstance`` checks agree whichever name a package used.
A ``channels.*`` name that tether does not have fails at once with a message naming it, instead of falling through
to the real Channels installation and mixing the two frameworks in one process.

The real ``channels`` package may be installed as well (a plug-in's dependencies pull it in). ``install()`` then
refuses to run if a real Channels module is already imported (the process would hold both), and otherwise logs one
warning naming the installation that the alias hides.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Sequence
from types import ModuleType

from django.core.exceptions import ImproperlyConfigured

__all__ = ["AliasFinder", "install", "is_installed", "tether_name_for", "uninstall"]

logger = logging.getLogger("tether.compat")

#: channels_redis has no module tree to mirror: only its two layer modules (and the package) have counterparts.
_CHANNELS_REDIS_MODULES = {
    "channels_redis": "tether.layers.redis",
    "channels_redis.core": "tether.layers.redis.core",
    "channels_redis.pubsub": "tether.layers.redis.pubsub",
}

_ROOTS = ("channels", "channels_redis")

_lock = threading.Lock()


def _is_aliased(name: str) -> bool:
    """True for the names the alias answers for: ``channels``, ``channels_redis`` and their submodules."""
    return any(name == root or name.startswith(f"{root}.") for root in _ROOTS)


def tether_name_for(name: str) -> str | None:
    """The tether module that the Channels module ``name`` stands for, or None when the alias ignores ``name``.

    ``channels.X.Y`` maps to ``tether.X.Y``; ``channels_redis.core`` and ``.pubsub`` map to the modules of
    ``tether.layers.redis`` that define ``RedisChannelLayer`` and ``RedisPubSubChannelLayer``. Raises
    ``ModuleNotFoundError`` for a ``channels_redis`` module with no counterpart. Does not check that a
    ``tether.X.Y`` exists; the finder does.
    """
    if name == "channels" or name.startswith("channels."):
        return "tether" + name.removeprefix("channels")
    if name in _CHANNELS_REDIS_MODULES:
        return _CHANNELS_REDIS_MODULES[name]
    if name.startswith("channels_redis."):
        raise ModuleNotFoundError(
            f"No module named {name!r}: tether.compat.install() maps channels_redis.core and channels_redis.pubsub "
            f"to tether's Redis layers, and {name} has no counterpart in tether. Import RedisChannelLayer or "
            f"RedisPubSubChannelLayer from tether.layers.redis instead, or do without the alias.",
            name=name,
        )
    return None


class _AliasLoader(importlib.abc.Loader):
    """Loads an alias by importing the tether module and returning that same object.

    The import system stamps the alias's spec on whatever ``create_module`` returns; ``exec_module`` puts the tether
    module's own spec back, so the module keeps one identity (``__spec__.name`` is its tether name) under both names.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self._target_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # Nothing to run: the tether module was executed when it was imported under its own name.
        module.__spec__ = self._target_spec


class AliasFinder(importlib.abc.MetaPathFinder):
    """The ``sys.meta_path`` finder that answers for every ``channels`` and ``channels_redis`` module name.

    It must answer for all of them, found or not: a name it let through would be looked up by the ordinary path
    finder, which would load a second copy of a tether file (under a ``channels`` name) or the real Channels module.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        tether_name = tether_name_for(fullname)
        if tether_name is None:
            return None
        try:
            found = importlib.util.find_spec(tether_name)
        except ModuleNotFoundError:
            found = None
        if found is None:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: tether.compat.install() maps channels.* to tether.*, and tether has "
                f"no module {tether_name}. If a package needs {fullname}, it uses a part of Channels that tether "
                f"does not provide: replace that import, or run that package without the alias.",
                name=fullname,
            )
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(tether_name))


_finder = AliasFinder()


def _is_tether_module(module: object) -> bool:
    name = getattr(module, "__name__", "")
    return name == "tether" or name.startswith("tether.")


def _imported_channels_modules() -> list[str]:
    """Names of real Channels or channels_redis modules (not aliases) already in ``sys.modules``."""
    return sorted(
        name for name, module in list(sys.modules.items()) if _is_aliased(name) and not _is_tether_module(module)
    )


def _warn_about_shadowed_installations() -> None:
    for root in _ROOTS:
        spec = importlib.machinery.PathFinder.find_spec(root)
        if spec is not None:
            where = spec.submodule_search_locations or [spec.origin or root]
            logger.warning(
                "tether.compat: 'import %s' now gives tether; the %s package installed at %s is hidden. "
                "Uninstall it (pip uninstall %s) to silence this warning.",
                root,
                root,
                ", ".join(str(location) for location in where),
                root.replace("_", "-"),
            )


def install() -> None:
    """Make ``import channels...`` and ``import channels_redis...`` give tether's modules, from now on.

    Call it before anything imports ``channels``: at the top of ``settings.py`` (it is read first by ``manage.py``,
    the server and the test runner) or of ``asgi.py``. Calling it again does nothing.

    Raises ``ImproperlyConfigured`` when real Channels modules are already imported: the process would then run
    two frameworks side by side. Logs a warning when the real package is installed but not imported yet.
    """
    with _lock:
        if _finder in sys.meta_path:
            return
        already = _imported_channels_modules()
        if already:
            raise ImproperlyConfigured(
                f"tether.compat.install() was called after the real Channels was imported ({', '.join(already)}). "
                f"Call it earlier, before anything imports channels (first thing in settings.py, asgi.py or "
                f"conftest.py), or uninstall channels and channels-redis."
            )
        _warn_about_shadowed_installations()
        sys.meta_path.insert(0, _finder)
        logger.debug("tether.compat: channels and channels_redis imports now resolve to tether.")


def uninstall() -> None:
    """Undo ``install()``: remove the finder and forget the alias names (for tests). Nothing to do if not installed.

    Modules that were imported through the alias keep the references they hold; only new imports are affected.
    """
    with _lock:
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        for name, module in list(sys.modules.items()):
            if _is_aliased(name) and _is_tether_module(module):
                del sys.modules[name]


def is_installed() -> bool:
    """Whether ``install()`` is in force."""
    return _finder in sys.meta_path
