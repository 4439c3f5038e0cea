"""``manage.py tether_status`` against two uvicorn processes of the test project sharing the Redis layer.

Both processes run with ``PROJECT_METRICS=1`` and ``PROJECT_STATUS=1`` (snapshots every 0.5 s) under a Redis prefix
of the test's own. The test keeps connections open on each, then runs the command (a third process, on the same
settings) until its summary says what the test did: two processes, the connections of each and their total, the
group they joined. Runs repeat until a deadline, so a loaded machine is slower but not wrong.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.layers.conftest import REDIS_URL, redis_layer_factory
from tests.project.harness import copy_project, run_command, uvicorn_processes

pytest.importorskip("prometheus_client", reason="the 'metrics' extra of django-tether is not installed")
pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")

from tether.layers.redis import RedisChannelLayer

WAIT = 60.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str], dict[str, str]]]:
    """The project copy, the two servers' hosts, and the environment the command needs to reach them."""
    project = copy_project(tmp_path_factory.mktemp("status") / "project")
    env = {
        "PROJECT_REDIS_PREFIX": f"tether-test-status-{secrets.token_hex(6)}",
        "PROJECT_REDIS_URL": REDIS_URL,
        "PROJECT_METRICS": "1",
        "PROJECT_STATUS": "1",
    }
    try:
        with uvicorn_processes(project, [env, env], "--log-level", "info") as commands:
            yield project, [command.host for command in commands], env
    finally:
        asyncio.run(_flush(env["PROJECT_REDIS_PREFIX"]))


async def _flush(prefix: str) -> None:
    async with redis_layer_factory("RedisChannelLayer")(prefix=prefix):
        pass  # the factory flushes and closes the layer on the way out


def status_until(project: Path, env: dict[str, str], done: Any, *args: str) -> str:
    """Run the command until ``done(output)`` holds; its last output, or a failure naming it after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        code, output = run_command(project, "tether_status", "--wait", "2", *args, timeout=WAIT, **env)
        assert code == 0, output
        if done(output):
            return output
        if time.monotonic() > deadline:
            raise AssertionError(f"tether_status never showed what was expected; last output:\n{output}")


def json_of(output: str) -> dict[str, Any]:
    return json.loads(output[output.index("{") :])


async def test_the_command_sums_up_both_processes(servers: tuple[Path, list[str], dict[str, str]]) -> None:
    project, hosts, env = servers
    # Two echo connections on the first process, one on the second, and one member of group "lobby" on each.
    sockets = [await websockets.connect(f"ws://{host}/ws/echo/", open_timeout=WAIT) for host in (*hosts, hosts[0])]
    sockets += [await websockets.connect(f"ws://{host}/ws/stall/lobby/", open_timeout=WAIT) for host in hosts]
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=env["PROJECT_REDIS_PREFIX"])
    try:
        for ws in sockets[:3]:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), WAIT) == "ping"
        # RedisChannelLayer learns its members of a group from the group's messages: send it one.
        await layer.group_send("lobby", {"type": "stall.event"})

        def complete(output: str) -> bool:
            totals = json_of(output)["totals"]
            consumers = totals["consumers"]
            return (
                totals["processes"] == 2
                and consumers.get("EchoConsumer", {}).get("open") == 3
                and consumers.get("StallConsumer", {}).get("open") == 2
                and ["lobby", 2] in totals["groups"]
            )

        output = await asyncio.to_thread(status_until, project, env, complete, "--json")
        summary = json_of(output)
        assert summary["totals"]["open"] == 5
        assert summary["totals"]["consumers"]["EchoConsumer"]["in"] >= 3
        by_process = {snapshot["process"]: snapshot for snapshot in summary["processes"]}
        assert sorted(snapshot["open"] for snapshot in by_process.values()) == [2, 3]
        for snapshot in by_process.values():
            assert snapshot["layers"]["default"]["ok"] is True

        text = await asyncio.to_thread(status_until, project, env, lambda out: "Processes: 2" in out)
        assert "open connections: 5" in text
        assert text.count("\nProcess ") == 2
        assert "layer default: ok" in text
    finally:
        for ws in sockets:
            await ws.close()
        await layer.close()
