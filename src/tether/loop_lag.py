"""How late the event loop runs: a cheap periodic probe, one per loop, shared by the metrics and the readiness check.

The probe sleeps ``interval`` seconds in a task of its own and measures how much later than asked it woke up. A loop
that a handler blocks (a synchronous database call in an ``async def``, a long computation) wakes it late by the time
it was blocked, so the lag is what every other connection of that process waited too. One wake-up every half second
costs nothing measurable.

The task is owned: ``probe_for_running_loop()`` starts it once per loop and keeps it; ``LoopLagProbe.stop()``
cancels and awaits it, and ``asyncio.run`` (which uvicorn uses) cancels it at shutdown like any pending task.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Callable

__all__ = ["DEFAULT_INTERVAL", "LoopLagProbe", "add_listener", "probe_for_running_loop", "remove_listener"]

#: Seconds between two wake-ups of the probe.
DEFAULT_INTERVAL = 0.5
#: Samples kept for ``recent_max``: the last 10 seconds at the default interval.
_KEPT_SAMPLES = 20

_probes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLagProbe] = weakref.WeakKeyDictionary()
#: Called with every sample of every probe (the metrics register one); set before probes start.
_listeners: list[Callable[[float], None]] = []


def add_listener(listener: Callable[[float], None]) -> None:
    """Have ``listener(lag_seconds)`` called with every sample (once; adding it again does nothing)."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: Callable[[float], None]) -> None:
    with contextlib.suppress(ValueError):
        _listeners.remove(listener)


class LoopLagProbe:
    """The probe of one event loop: its task, and the last samples for the readiness check."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = DEFAULT_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}.")
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=_KEPT_SAMPLES)
        self._loop = loop
        self._task: asyncio.Task[None] | None = loop.create_task(self._run(), name="tether-loop-lag-probe")

    async def _run(self) -> None:
        loop, interval, samples = self._loop, self.interval, self.samples
        while True:
            started = loop.time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - started - interval)
            samples.append(lag)
            for listener in _listeners:
                listener(lag)

    def recent_max(self) -> float:
        """The largest lag of the last samples (up to 10 seconds' worth), 0 before the first one."""
        return max(self.samples, default=0.0)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Cancel the probe's task and wait for it; the loop gets a new probe the next time one is asked for."""
        task, self._task = self._task, None
        if _probes.get(self._loop) is self:
            del _probes[self._loop]
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def probe_for_running_loop(interval: float = DEFAULT_INTERVAL) -> LoopLagProbe:
    """The running loop's probe, started on first use (``interval`` applies to a probe started now)."""
    loop = asyncio.get_running_loop()
    probe = _probes.get(loop)
    if probe is None or not probe.running:
        probe = _probes[loop] = LoopLagProbe(loop, interval)
    return probe
