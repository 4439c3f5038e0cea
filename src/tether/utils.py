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

    Each callable is a receive function (the ASGI ``receive``, a layer's ``receive`` for one channel). Every source
    keeps one receive pending, also while a handler runs, and messages are dispatched in the order their receives
    completed, so a layer message never overtakes a client frame that arrived before it. A message is dispatched
    only after the previous one was handled: handlers never overlap. Returns or raises when ``dispatch`` does (or a
    source raises); the pending receives are cancelled on the way out.
    """
    loop = asyncio.get_running_loop()
    # Receives that finished, in the order they finished: at most one per source, so a plain list. (An asyncio.Queue
    # here cost every idle connection about 2.5 KiB of deques, and every message its locking.)
    completed: list[asyncio.Task[Any]] = []
    wakeup: asyncio.Future[None] | None = None

    def receive_done(task: asyncio.Task[Any]) -> None:
        completed.append(task)
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def start_receive(index: int) -> asyncio.Task[Any]:
        task = loop.create_task(consumer_callables[index]())
        task.add_done_callback(receive_done)
        return task

    tasks = [start_receive(index) for index in range(len(consumer_callables))]
    try:
        while True:
            while not completed:
                wakeup = loop.create_future()
                await wakeup
            wakeup = None
            task = completed.pop(0)
            index = tasks.index(task)
            message = task.result()
            tasks[index] = start_receive(index)
            await dispatch(message)
    finally:
        for task in tasks:
            task.cancel()
        # Let the cancellations land so no receive is left half-done.
        await asyncio.gather(*tasks, return_exceptions=True)
