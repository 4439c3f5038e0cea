"""Liveness and readiness (tether.health): in one process with the in-memory layer, then a uvicorn process of the
test project whose Redis server the test stops and starts again."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, override_settings

from tests.conftest import free_port
from tests.layers.conftest import eventually
from tests.project.harness import Command, copy_project, http_get
from tether import loop_lag
from tether.health import liveness_view, readiness_view
from tether.layers import InMemoryChannelLayer, channel_layers

WAIT = 30.0


async def ready() -> tuple[int, dict[str, Any]]:
    response = await readiness_view(RequestFactory().get("/readyz/"))
    return response.status_code, json.loads(response.content)


@pytest.fixture
async def fresh_probe() -> Any:
    """Stop the loop's lag probe after the test, so the next test's loop starts its own."""
    yield
    await loop_lag.probe_for_running_loop().stop()


async def test_liveness_answers_while_the_process_serves() -> None:
    response = await liveness_view(RequestFactory().get("/healthz/"))
    assert (response.status_code, json.loads(response.content)) == (200, {"status": "ok"})


async def test_ready_when_the_layer_answers(fresh_probe: None) -> None:
    status, body = await ready()
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["checks"]["layer:default"]["ok"] is True
    assert body["checks"]["event_loop"]["ok"] is True
    # Checks reuse one channel per layer: the second finds its own answer, not a leftover.
    assert (await ready())[0] == 200


class SilentLayer(InMemoryChannelLayer):
    """A layer whose messages never arrive, as a layer that lost its server may behave."""

    async def receive(self, channel: str) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class BrokenLayer(InMemoryChannelLayer):
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        raise ConnectionRefusedError("Redis is not there")


@pytest.mark.parametrize(
    ("layer", "error"),
    [
        (SilentLayer(), "no answer within 0.2 s (TETHER_HEALTH_LAYER_TIMEOUT)"),
        (BrokenLayer(), "ConnectionRefusedError"),
    ],
)
async def test_not_ready_when_the_layer_does_not_answer(fresh_probe: None, layer: Any, error: str) -> None:
    channel_layers.set("default", layer)
    with override_settings(TETHER_HEALTH_LAYER_TIMEOUT=0.2):
        status, body = await ready()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["layer:default"]["ok"] is False
    assert body["checks"]["layer:default"]["error"].startswith(error)


async def test_not_ready_after_the_loop_stalled(fresh_probe: None) -> None:
    probe = loop_lag.probe_for_running_loop()
    await asyncio.sleep(0)  # the probe starts its first sleep
    time.sleep(1.2)  # noqa: ASYNC251  the stall under test: the loop is blocked on purpose
    await eventually(lambda: probe.samples)
    with override_settings(TETHER_HEALTH_MAX_LOOP_LAG=0.3):
        status, body = await ready()
    assert status == 503
    assert body["checks"]["event_loop"]["ok"] is False
    assert body["checks"]["event_loop"]["lag_seconds"] >= 0.6


async def test_a_bad_health_setting_is_named() -> None:
    with override_settings(TETHER_HEALTH_LAYER_TIMEOUT="1"), pytest.raises(ImproperlyConfigured, match="TETHER_HEALTH"):
        await ready()


async def test_a_probe_stops_when_asked() -> None:
    probe = loop_lag.probe_for_running_loop(interval=0.01)
    await eventually(lambda: len(probe.samples) >= 2)
    await probe.stop()
    assert not probe.running
    assert loop_lag.probe_for_running_loop() is not probe
    await loop_lag.probe_for_running_loop().stop()


# -- a served project and its Redis going away --------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[Any]:
    pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    from tests.layers.redis.conftest import RedisServers

    servers = RedisServers()
    try:
        yield servers.start()
    finally:
        servers.stop_all()


def wait_for_status(url: str, status: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        got, body = http_get(url)
        if got == status:
            return json.loads(body)
        assert time.monotonic() < deadline, f"{url} still answers {got}: {body}"
        time.sleep(0.2)


def test_readiness_follows_redis_going_away_and_coming_back(tmp_path: Any, own_redis: Any) -> None:
    port = free_port()
    project = copy_project(tmp_path / "project")
    with Command(
        project,
        "project.asgi:application",
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "info"),
        program=("-m", "uvicorn"),
        PROJECT_REDIS_PREFIX=f"tether-test-health-{secrets.token_hex(6)}",
        PROJECT_REDIS_URL=own_redis.url,
    ) as server:
        server.wait_for_line("Uvicorn running on", timeout=60)
        base = f"http://127.0.0.1:{port}"
        assert wait_for_status(f"{base}/readyz/", 200)["checks"]["layer:default"]["ok"] is True
        own_redis.kill()
        body = wait_for_status(f"{base}/readyz/", 503)
        assert body["checks"]["layer:default"]["ok"] is False
        assert body["checks"]["event_loop"]["ok"] is True
        assert http_get(f"{base}/healthz/")[0] == 200  # alive all along: only not ready
        own_redis.start()
        assert wait_for_status(f"{base}/readyz/", 200)["status"] == "ok"
