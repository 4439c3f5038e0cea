"""Serve the dashboard's worker channel from inside the web server, for the in-memory channel layer.

The in-memory layer lives in one process, so ``runworker`` in another process could never see its messages. With
``DASHBOARD_TICKER = "in-process"`` the dashboard consumer calls ``ensure_worker()``, which starts, once per event
loop, a task running the same ``tether.worker.Worker`` that ``runworker`` runs, on the same channel routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from django.conf import settings

from tether.layers import get_channel_layer
from tether.routing import ChannelNameRouter
from tether.worker import Worker

__all__ = ["ensure_worker", "stop_worker"]

_tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = weakref.WeakKeyDictionary()


def ensure_worker() -> None:
    """Start the in-process dashboard worker on the running loop, unless it runs already or the settings say
    that ``runworker`` serves the channel."""
    if settings.DASHBOARD_TICKER != "in-process":
        return
    loop = asyncio.get_running_loop()
    task = _tasks.get(loop)
    if task is None or task.done():
        from dashboard.routing import channel_routes

        worker = Worker(ChannelNameRouter(channel_routes), list(channel_routes), get_channel_layer())
        _tasks[loop] = loop.create_task(worker.run(), name="dashboard-in-process-worker")


async def stop_worker() -> None:
    """Stop the in-process worker of the running loop, if any (tests call this)."""
    task = _tasks.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
