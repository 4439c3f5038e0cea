"""The consumer helper end to end: two uvicorn processes serving the test project's presence room on one Redis layer,
clients on both, one process killed with SIGKILL.

Every wait is a deadline on what the clients receive; the SIGKILL wait is the ttl plus a margin for a loaded machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.project.harness import Command, copy_project, delete_redis_prefix, uvicorn_processes

REDIS_URL = os.environ.get("TETHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TTL = 2.0
WAIT = 15.0


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Command]]:
    """Two uvicorn processes of the test project on the shared Redis, with a key prefix of this test's own (deleted
    afterwards) and presence's ttl at ``TTL``."""
    pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    project = copy_project(tmp_path / "project")
    prefix = f"tether-test-presence-{secrets.token_hex(6)}"
    try:
        env = {"PROJECT_REDIS_PREFIX": prefix, "PROJECT_REDIS_URL": REDIS_URL, "PROJECT_PRESENCE_TTL": str(TTL)}
        with uvicorn_processes(project, [env, env], "--lifespan", "off") as commands:
            yield commands
    finally:
        asyncio.run(delete_redis_prefix(REDIS_URL, prefix))


class Client:
    """A WebSocket in the presence room, keeping every presence event it receives."""

    def __init__(self, ws: Any, channel: str) -> None:
        self.ws = ws
        self.channel = channel
        self.events: list[dict[str, Any]] = []

    async def next_answer(self, key: str) -> Any:
        """The next message holding ``key`` (events before it are kept)."""
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
            if key in message:
                return message[key]
            self.events.append(message)

    async def who(self) -> dict[str, list[dict[str, Any]]]:
        await self.ws.send(json.dumps({"who": True}))
        return await self.next_answer("who")

    async def wait_for(self, kind: str, channel: str, timeout: float = WAIT) -> float:
        """Seconds until a ``kind`` event naming ``channel`` has arrived."""
        started = time.monotonic()
        while not any(
            event["type"] == kind and any(entry["channel"] == channel for entry in event["members"])
            for event in self.events
        ):
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                raise AssertionError(f"no {kind} for {channel} within {timeout}s; got {self.events}")
            try:
                self.events.append(json.loads(await asyncio.wait_for(self.ws.recv(), remaining)))
            except asyncio.TimeoutError:
                continue
        return time.monotonic() - started


async def enter(host: str, user: str) -> Client:
    ws = await websockets.connect(f"ws://{host}/ws/presence/lobby/?user={user}", open_timeout=WAIT)
    client = Client(ws, "")
    client.channel = await client.next_answer("channel")
    return client


def servers_of(who: dict[str, list[dict[str, Any]]]) -> dict[str, list[int]]:
    return {user: sorted(meta["server"] for meta in metas) for user, metas in who.items()}


async def test_consumers_in_two_processes_share_presence_and_a_killed_process_s_members_leave(servers):
    commands = servers
    first, second = (command.host for command in commands)
    port_1, port_2 = (int(host.rpartition(":")[2]) for host in (first, second))
    ada_1 = await enter(first, "ada")
    ada_2 = await enter(second, "ada")  # a second tab of the same person, in the other process
    bob = await enter(second, "bob")
    try:
        await ada_1.wait_for("presence.join", ada_2.channel)
        await ada_1.wait_for("presence.join", bob.channel)
        assert servers_of(await ada_1.who()) == {"ada": sorted([port_1, port_2]), "bob": [port_2]}
        assert servers_of(await bob.who()) == {"ada": sorted([port_1, port_2]), "bob": [port_2]}

        await bob.ws.close()  # leaving is the mixin's work on disconnect
        await ada_1.wait_for("presence.leave", bob.channel)
        assert servers_of(await ada_1.who()) == {"ada": sorted([port_1, port_2])}

        commands[1].process.send_signal(signal.SIGKILL)  # the second process dies with ada's second tab
        took = await ada_1.wait_for("presence.leave", ada_2.channel, timeout=TTL + WAIT)
        print(f"\nleave event {took:.2f}s after SIGKILL (ttl {TTL}s)")
        assert servers_of(await ada_1.who()) == {"ada": [port_1]}
    finally:
        for client in (ada_1, ada_2, bob):
            await client.ws.close()
