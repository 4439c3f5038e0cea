"""The metrics of two uvicorn processes, scraped over HTTP from one of them, match what the test did in both.

Both processes serve the test project on the shared Redis (a prefix of the test's own) with ``PROJECT_METRICS=1``
and one ``PROMETHEUS_MULTIPROC_DIR``, as docs/observability.md sets up several workers. The test opens echo
connections on each, sends frames, forces drops with a consumer that stops reading its channel, and polls
``/metrics/`` until the numbers are the ones it expects (each process flushes its counts every 0.2 s; the poll
waits for that, bounded, so a loaded machine is slower but not wrong).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import websockets

from tests.layers.conftest import REDIS_URL
from tests.project.harness import copy_project, http_get, uvicorn_processes

pytest.importorskip("prometheus_client", reason="the 'metrics' extra of django-tether is not installed")
pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")

from prometheus_client.parser import text_string_to_metric_families

from tether.layers.redis import RedisChannelLayer

#: Capacity of every channel on the servers' layer: the stalled consumer's channel is full after a few events.
CAPACITY = 5
#: Events sent to the stalled consumer's group. It takes at most 3 out of its channel (one in its handler, two read
#: ahead: tether.dispatch) and the channel holds CAPACITY, so between GROUP_EVENTS - 8 and GROUP_EVENTS - 5 drop.
GROUP_EVENTS = 20
WAIT = 30.0


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], str]]:
    """Two uvicorn processes of the test project sharing the Redis layer and the multiprocess directory."""
    root = tmp_path_factory.mktemp("metrics")
    project = copy_project(root / "project")
    multiproc_dir = root / "prometheus"
    multiproc_dir.mkdir()
    prefix = f"tether-test-metrics-{secrets.token_hex(6)}"
    env = {
        "PROJECT_REDIS_PREFIX": prefix,
        "PROJECT_REDIS_URL": REDIS_URL,
        "PROJECT_CAPACITY": str(CAPACITY),
        "PROJECT_METRICS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
    }
    try:
        with uvicorn_processes(project, [env, env], "--log-level", "info") as commands:
            yield [command.host for command in commands], prefix
    finally:
        asyncio.run(_flush(prefix))


async def _flush(prefix: str) -> None:
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        await layer.flush()
    finally:
        await layer.close()


async def scrape_until(host: str, expected: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict:
    """Scrape ``host`` until every expected sample has its value; fail with the differences after WAIT seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        status, body = await asyncio.to_thread(http_get, f"http://{host}/metrics/")
        assert status == 200, body
        scraped = samples(body)
        wrong = {
            (name, labels): (value(scraped, name, **dict(labels)), wanted)
            for (name, labels), wanted in expected.items()
            if value(scraped, name, **dict(labels)) != wanted
        }
        if not wrong:
            return scraped
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"metrics (got, expected) still differ after {WAIT} s: {wrong}")
        await asyncio.sleep(0.2)


async def echo_frames(host: str, frames: int, close: bool = True) -> websockets.ClientConnection:
    ws = await websockets.connect(f"ws://{host}/ws/echo/", open_timeout=WAIT)
    for number in range(frames):
        await ws.send(f"frame {number}")
        assert await asyncio.wait_for(ws.recv(), WAIT) == f"frame {number}"
    if close:
        await ws.close(1000)
    return ws


@pytest.fixture
async def redis_layer(servers: tuple[list[str], str]) -> AsyncIterator[RedisChannelLayer]:
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=servers[1], capacity=CAPACITY)
    try:
        yield layer
    finally:
        await layer.close()


async def test_connections_messages_and_drops_of_two_processes_add_up(
    servers: tuple[list[str], str], redis_layer: RedisChannelLayer
) -> None:
    (first, second), _ = servers
    # 3 connections on the first process (one stays open), 2 on the second: 5 accepted, 4 closed with 1000.
    await echo_frames(first, 2)
    await echo_frames(first, 2)
    still_open = await echo_frames(first, 3, close=False)
    await echo_frames(second, 4)
    await echo_frames(second, 1)
    frames = 2 + 2 + 3 + 4 + 1
    # A consumer on the second process stops reading its channel at the first group event: the rest fill and drop.
    group = f"stall-{secrets.token_hex(4)}"
    stalled = await websockets.connect(f"ws://{second}/ws/stall/{group}/", open_timeout=WAIT)
    try:
        for _ in range(GROUP_EVENTS):
            await redis_layer.group_send(group, {"type": "stall.event"})
        echo = (("consumer", "EchoConsumer"),)
        scraped = await scrape_until(
            first,
            {
                ("tether_websocket_connection_attempts_total", (*echo, ("outcome", "accepted"))): 5,
                (
                    "tether_websocket_connection_attempts_total",
                    (("consumer", "StallConsumer"), ("outcome", "accepted")),
                ): 1,
                ("tether_websocket_connections_open", echo): 1,
                ("tether_websocket_connections_open", (("consumer", "StallConsumer"),)): 1,
                ("tether_websocket_closes_total", (*echo, ("code", "1000"))): 4,
                ("tether_messages_received_total", (*echo, ("kind", "text"))): frames,
                ("tether_messages_sent_total", (*echo, ("kind", "text"))): frames,
                # Every connect is timed (text frames one in TIMED_EVERY per process: tests/metrics/test_metrics.py).
                ("tether_handler_duration_seconds_count", (*echo, ("kind", "connect"))): 5,
            },
        )
        # The drops take the time the events need to reach the second process, and each process probes its loop
        # every half second from its first connection on: poll for both.
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            dropped = value(scraped, "tether_layer_dropped_messages_total", alias="default", reason="channel_full")
            probes = value(scraped, "tether_event_loop_lag_seconds_count")
            if dropped >= GROUP_EVENTS - 8 and probes >= 2:
                break
            assert asyncio.get_running_loop().time() < deadline, f"{dropped} drops, {probes} loop probes counted"
            await asyncio.sleep(0.2)
            scraped = samples((await asyncio.to_thread(http_get, f"http://{first}/metrics/"))[1])
        assert dropped <= GROUP_EVENTS - CAPACITY
        timed = value(scraped, "tether_layer_operation_duration_seconds_count", alias="default", operation="group_add")
        assert timed >= 1
    finally:
        await stalled.close()
        await still_open.close()


async def test_a_disallowed_address_and_an_unmounted_path_get_no_metrics(servers: tuple[list[str], str]) -> None:
    host = servers[0][0]
    status, body = await asyncio.to_thread(http_get, f"http://{host}/private-metrics/")
    assert (status, body) == (403, "Metrics are not served to this address.\n")
    status, body = await asyncio.to_thread(http_get, f"http://{host}/tether/metrics/")
    assert status == 404
    assert "tether_" not in body
