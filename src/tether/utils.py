"""Small helpers shared by consumers and workers; ``await_many_dispatch`` lives in ``tether.dispatch``."""

from __future__ import annotations

import types
from typing import Any

from tether.dispatch import await_many_dispatch

__all__ = ["await_many_dispatch", "name_that_thing"]


def name_that_thing(thing: Any) -> str:
    """Return a readable dotted name for a class, function, method or instance, for log lines and errors."""
    if isinstance(thing, types.MethodType):
        return f"{name_that_thing(thing.__self__)}.{thing.__func__.__name__}"
    if isinstance(thing, type) or (callable(thing) and hasattr(thing, "__qualname__")):
        module = getattr(thing, "__module__", None)
        qualname = str(getattr(thing, "__qualname__", None) or getattr(thing, "__name__", repr(thing)))
        return f"{module}.{qualname}" if module and module != "builtins" else qualname
    return name_that_thing(type(thing))
