"""tether's modules offer every public name of Channels' modules, with call signatures that accept the same calls.

A Channels project moves over by renaming its imports, so each module of Channels (the release pinned in the test
extra) is compared with the tether module of the same path: every public name Channels defines there must exist in
tether, and every function, class and public method must accept the parameters Channels' does, with the same
defaults. tether may add parameters, as long as they have defaults. The differences that are deliberate are listed in
``ALLOWED`` below, each with its reason; docs/coming-from-channels.md explains them to users.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any

import pytest

channels = pytest.importorskip("channels", reason="Channels is a test dependency: pip install -e '.[test]'")

#: Deliberate differences, as "module.name", "module.Class.method" or "module.function(parameter)", with the reason.
ALLOWED: dict[str, str] = {
    "channels.db.database_sync_to_async": (
        "a function returning a DatabaseSyncToAsync rather than the class itself, so that it also works with "
        "arguments as a decorator (@database_sync_to_async(thread_sensitive=False))"
    ),
    "channels.db.DatabaseSyncToAsync.thread_handler": (
        "asgiref's private per-call hook, whose parameters change between asgiref releases; tether wraps the "
        "function instead of overriding it"
    ),
    "channels.testing.application.no_op": (
        "the stand-in Channels' communicator patches over close_old_connections; tether's database handling needs "
        "no patching in tests"
    ),
    "channels.testing.live.TEST_DATABASE_PREFIX": "Django's constant, which Channels' module imports",
    "channels.testing.live.make_application": (
        "a helper for daphne's pickled child process; tether's live server child builds the application itself"
    ),
    "channels.testing.live.set_database_connection": (
        "a helper for daphne's child process; tether's child applies the test database settings itself"
    ),
    "channels.testing.live.ChannelsLiveServerTestCase.ProtocolServerProcess": (
        "daphne's server process class; tether's live server runs its own uvicorn child process"
    ),
    "channels.testing.live.ChannelsLiveServerTestCase.static_wrapper": (
        "tether's live server serves static files with its own handler, switched by serve_static"
    ),
    "channels.sessions.InstanceSessionWrapper": (
        "the per-connection helper inside Channels' SessionMiddleware; tether's middleware has no such object and "
        "nothing outside the middleware builds one"
    ),
}

#: Consumers whose ``__init__`` in Channels takes ``*args`` only to pass them on to ``object.__init__``, which
#: refuses any: tether's take keyword arguments only (``as_asgi(**initkwargs)``), so no working call is lost.
ARGS_PASSED_TO_OBJECT = [
    "channels.generic.http.AsyncHttpConsumer",
    "channels.generic.websocket.WebsocketConsumer",
    "channels.generic.websocket.JsonWebsocketConsumer",
    "channels.generic.websocket.AsyncWebsocketConsumer",
    "channels.generic.websocket.AsyncJsonWebsocketConsumer",
    "channels.security.websocket.WebsocketDenier",
]
ALLOWED.update(
    {f"{name}(args)": "Channels passes *args to object(), which refuses them" for name in ARGS_PASSED_TO_OBJECT}
)

#: The entries of ALLOWED that a comparison relied on.
used_allowances: set[str] = set()


def allowed(entry: str) -> bool:
    if entry in ALLOWED:
        used_allowances.add(entry)
        return True
    return False


def channels_modules() -> list[str]:
    """Every module of the installed Channels package."""
    names = ["channels"]
    for info in pkgutil.walk_packages(channels.__path__, prefix="channels."):
        names.append(info.name)
    return sorted(names)


def defined_in(value: Any, module: ModuleType) -> bool:
    """Whether ``value`` is part of ``module``'s own API: a class or function it defines, an instance of a class it
    defines, or a plain constant.

    Names a Channels module merely imports (``asyncio``, Django's ``settings``, asgiref's ``sync_to_async``, or
    another Channels module's class) are not its API: the module that defines them is compared instead.
    """
    if inspect.isclass(value) or inspect.isfunction(value):
        return value.__module__ == module.__name__
    if inspect.ismodule(value):
        return False
    return type(value).__module__ == module.__name__ or isinstance(value, (str, int, float, tuple, frozenset))


def public_names(module: ModuleType) -> dict[str, Any]:
    """The public names a module defines: its ``__all__`` if it has one, else its non-underscore names."""
    names = getattr(module, "__all__", None) or [name for name in vars(module) if not name.startswith("_")]
    return {name: getattr(module, name) for name in names if defined_in(getattr(module, name), module)}


def signature_problems(where: str, theirs: Any, ours: Any) -> list[str]:
    """What a call that Channels' ``theirs`` accepts could not do with tether's ``ours``."""
    try:
        their_signature = inspect.signature(theirs)
    except (TypeError, ValueError):
        return []
    try:
        our_signature = inspect.signature(ours)
    except (TypeError, ValueError):
        return [f"{where}: tether's has no signature to call"]
    our_parameters = our_signature.parameters
    takes_var_keyword = any(p.kind is p.VAR_KEYWORD for p in our_parameters.values())
    takes_var_positional = any(p.kind is p.VAR_POSITIONAL for p in our_parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    their_positional = [p.name for p in their_signature.parameters.values() if p.kind in positional]
    our_positional = [p.name for p in our_parameters.values() if p.kind in positional]
    problems = []
    if our_positional[: len(their_positional)] != their_positional and not takes_var_positional:
        problems.append(f"{where}: positional parameters {their_positional} in Channels, {our_positional} in tether")
    for name, their in their_signature.parameters.items():
        if allowed(f"{where}({name})"):
            continue
        if their.kind is their.VAR_POSITIONAL:
            if not takes_var_positional:
                problems.append(f"{where}: Channels takes *{name}, tether does not")
        elif their.kind is their.VAR_KEYWORD:
            if not takes_var_keyword:
                problems.append(f"{where}: Channels takes **{name}, tether does not")
        elif name not in our_parameters:
            if not takes_var_keyword:
                problems.append(f"{where}: parameter {name!r} is missing")
        elif their.default is not their.empty and our_parameters[name].default != their.default:
            ours_default = our_parameters[name].default
            problems.append(f"{where}({name}): default {their.default!r} in Channels, {ours_default!r} in tether")
    for name, our in our_parameters.items():
        required = our.default is our.empty and our.kind not in (our.VAR_POSITIONAL, our.VAR_KEYWORD)
        if required and name not in their_signature.parameters:
            problems.append(f"{where}: tether requires {name!r}, which Channels does not take")
    return problems


def class_problems(where: str, theirs: type, ours: Any) -> list[str]:
    if not inspect.isclass(ours):
        return [f"{where}: a class in Channels, {type(ours).__name__} in tether"]
    problems = signature_problems(where, theirs, ours)
    for name, their in vars(theirs).items():
        if name.startswith("_") or allowed(f"{where}.{name}"):
            continue
        try:
            inspect.getattr_static(ours, name)
        except AttributeError:
            problems.append(f"{where}.{name} is missing")
            continue
        if inspect.isfunction(their) or isinstance(their, (staticmethod, classmethod)):
            problems += signature_problems(f"{where}.{name}", getattr(theirs, name), getattr(ours, name))
    return problems


def module_problems(channels_name: str) -> list[str]:
    theirs = importlib.import_module(channels_name)
    tether_name = "tether" + channels_name.removeprefix("channels")
    try:
        ours = importlib.import_module(tether_name)
    except ImportError as exc:
        return [f"{channels_name}: no module {tether_name} ({exc})"]
    problems = []
    for name, their in public_names(theirs).items():
        where = f"{channels_name}.{name}"
        if allowed(where):
            continue
        if not hasattr(ours, name):
            problems.append(f"{where} is missing")
        elif inspect.isclass(their):
            problems += class_problems(where, their, getattr(ours, name))
        elif callable(their):
            problems += signature_problems(where, their, getattr(ours, name))
    return problems


def test_channels_is_the_pinned_release():
    assert channels.__version__ == "4.3.2", "compare with the new release, update ALLOWED, then the pin"


@pytest.mark.parametrize("channels_name", channels_modules())
def test_tether_module_offers_what_the_channels_module_offers(channels_name):
    assert module_problems(channels_name) == []


def test_every_allowed_difference_is_still_a_difference():
    """An entry of ALLOWED that no comparison relies on any more is stale and goes."""
    for channels_name in channels_modules():
        module_problems(channels_name)
    assert set(ALLOWED) - used_allowances == set()
