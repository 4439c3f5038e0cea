"""Small helpers shared by consumers and workers."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["await_many_dispatch", "name_that_thing"]


def name_that_thing(thing: Any) -> str:
    """Return a readable dotted name for a class, function, method or instance, for log lines and errors."""
    if isinstance(thing, types.MethodType):
        return f"{name_that_thing(thing.__self__)}.{thing.__func__.__name__}"
    if isinstance(thing, type) or (callable(thing) and hasattr(thing, "__qualname__")):
        module = getattr(thing, "__module__", None)
        qualname = getattr(thing, "__qualname__", None) or getattr(thing, "__name__", repr(thing))
        return f"{module}.{qualname}" if module and module != "builtins" else qualname
    return name_that_thing(type(thing))


async def await_many_dispatch(
    consumer_callables: list[Callable[[], Awaitable[Any]]],
    dispatch: Callable[[Any], Awaitable[Any]],
) -> None:
    """Wait on several message sources at once and dispatch each message as it arrives, one at a time.

    Each callable is a receive function (the ASGI ``receive``, a layer's ``receive`` for one channel). A message is
    dispatched before the next one is taken, so handlers never overlap; when several sources are ready together their
    messages go in the order of ``consumer_callables``. Returns or raises when ``dispatch`` does; the pending receives
    are cancelled on the way out.
    """
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(source()) for source in consumer_callables]
    try:
        while True:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for index, task in enumerate(tasks):
                if task.done():
                    result = task.result()
                    await dispatch(result)
                    tasks[index] = loop.create_task(consumer_callables[index]())
    finally:
        for task in tasks:
            task.cancel()
        # Let the cancellations land so no receive is left half-done, without waiting forever on a stubborn one.
        await asyncio.gather(*tasks, return_exceptions=True)
