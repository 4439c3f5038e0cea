"""Health endpoints for orchestrators: ``liveness_view`` (the process serves) and ``readiness_view`` (it can work).

Both are async views, so they are answered by the event loop that serves the connections: a process whose loop is
blocked does not answer at all, which a probe with a timeout reads as a failure. Readiness also sends a message
through each channel layer to itself and waits for it (``TETHER_HEALTH_LAYER_TIMEOUT`` seconds at most, 1 by
default), and checks that the loop has not run more than ``TETHER_HEALTH_MAX_LOOP_LAG`` seconds late (1 by
default) in the last ten seconds (``tether.loop_lag``). Neither needs the metrics extra. docs/observability.md has
Kubernetes probes and a systemd watchdog for them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from time import perf_counter
from typing import Any

from django.http import HttpRequest, JsonResponse

from tether import loop_lag
from tether.layers.base import BaseChannelLayer
from tether.layers.manager import channel_layers
from tether.limits import seconds_setting

__all__ = ["check_layer", "liveness_view", "readiness_view"]

logger = logging.getLogger("tether.health")

_DEFAULT_LAYER_TIMEOUT = 1.0
_DEFAULT_MAX_LOOP_LAG = 1.0

#: Each layer's health channel in this process, the lock that keeps one check at a time on it, and the loop both
#: belong to: one channel per layer, reused, so checks do not leave a channel behind each (a new one if the layer is
#: checked from another loop, where the lock could not be used).
_health_channels: weakref.WeakKeyDictionary[BaseChannelLayer, tuple[str, asyncio.Lock, asyncio.AbstractEventLoop]] = (
    weakref.WeakKeyDictionary()
)


async def liveness_view(request: HttpRequest) -> JsonResponse:
    """200 whenever the process answers: restart it only when it does not (a probe timeout)."""
    return JsonResponse({"status": "ok"})


async def readiness_view(request: HttpRequest) -> JsonResponse:
    """200 when every channel layer answers in time and the loop is not stalling, else 503; the body says which
    check failed, with each layer's round-trip time or error."""
    timeout = seconds_setting("TETHER_HEALTH_LAYER_TIMEOUT", _DEFAULT_LAYER_TIMEOUT)
    max_lag = seconds_setting("TETHER_HEALTH_MAX_LOOP_LAG", _DEFAULT_MAX_LOOP_LAG)
    lag = loop_lag.probe_for_running_loop().recent_max()
    checks: dict[str, dict[str, Any]] = {"event_loop": {"ok": lag <= max_lag, "lag_seconds": round(lag, 4)}}
    for alias in channel_layers.configs:
        checks[f"layer:{alias}"] = await _check_layer(alias, timeout)
    ready = all(check["ok"] for check in checks.values())
    if not ready:
        logger.warning("Not ready: %s", {name: check for name, check in checks.items() if not check["ok"]})
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


async def check_layer(alias: str, timeout: float) -> dict[str, Any]:
    """The readiness check of one layer, for other reporters (``tether.status``): ``{"ok": True, "seconds": ...}``
    or ``{"ok": False, "error": ...}``; never raises for a failing layer."""
    return await _check_layer(alias, timeout)


async def _check_layer(alias: str, timeout: float) -> dict[str, Any]:
    """Send a message to a channel of this process on the layer and receive it, within ``timeout`` seconds."""
    started = perf_counter()
    try:
        layer = channel_layers[alias]
        await asyncio.wait_for(_round_trip(layer), timeout)
    except asyncio.TimeoutError:
        return {"ok": False, "error": f"no answer within {timeout} s (TETHER_HEALTH_LAYER_TIMEOUT)"}
    except Exception as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"[:300]}
    return {"ok": True, "seconds": round(perf_counter() - started, 4)}


async def _round_trip(layer: BaseChannelLayer) -> None:
    """One message through ``layer`` to this process's health channel and back; older answers (from a check that
    timed out) are skipped."""
    loop = asyncio.get_running_loop()
    entry = _health_channels.get(layer)
    if entry is None or entry[2] is not loop:
        entry = _health_channels[layer] = (await layer.new_channel("tether.health."), asyncio.Lock(), loop)
    channel, lock, _ = entry
    token = secrets.token_hex(8)
    async with lock:
        await layer.send(channel, {"type": "tether.health", "token": token})
        while (await layer.receive(channel)).get("token") != token:
            pass
