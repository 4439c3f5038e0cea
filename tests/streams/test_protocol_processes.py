"""The stream protocol across processes: two uvicorn processes serving ``StreamConsumer``
(tests/project/project/streams_app.py) on one Redis layer, ``websockets`` clients on both.

Each test has a key prefix of its own on the shared Redis, deleted afterwards; every wait is a deadline on what the
clients receive.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.project.harness import Command, copy_project, delete_redis_prefix, uvicorn_processes
from tests.streams.protocol_client import connected

REDIS_URL = os.environ.get("TETHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[str]]:
    """The ``ws://host:port`` of two uvicorn processes of the test project's stream app on the shared Redis."""
    pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    project = copy_project(tmp_path / "project")
    prefix = f"tether-test-protocol-{secrets.token_hex(6)}"
    try:
        env = {"PROJECT_REDIS_PREFIX": prefix, "PROJECT_REDIS_URL": REDIS_URL, "PROJECT_PRESENCE_TTL": "2"}
        with uvicorn_processes(
            project, [env, env], "--lifespan", "off", app="project.streams_app:application"
        ) as commands:
            yield [f"ws://{command.host}" for command in commands]
            _no_errors_logged(commands)
    finally:
        asyncio.run(delete_redis_prefix(REDIS_URL, prefix))


def _no_errors_logged(commands: list[Command]) -> None:
    for command in commands:
        assert "Traceback" not in command.output, command.output


async def test_a_message_published_in_one_process_reaches_a_subscriber_of_the_other(servers: list[str]) -> None:
    first, second = servers
    async with connected(first, "ada") as reader, connected(second, "bob") as writer:
        start = (await reader.subscribe("room.across"))["result"]
        top = await writer.publish("room.across", count=3)
        assert top["epoch"] == start["epoch"] and top["offset"] == 3
        messages = await reader.all_messages(3)
        assert [(m["epoch"], m["offset"], m["data"]) for m in messages] == [
            (start["epoch"], n, {"n": n}) for n in (1, 2, 3)
        ]


async def test_a_subscriber_disconnected_while_1000_messages_are_published_gets_all_1000_in_order_once_elsewhere(
    servers: list[str],
) -> None:
    first, second = servers
    async with connected(second, "bob") as writer:
        async with connected(first, "ada") as reader:
            start = (await reader.subscribe("room.recover"))["result"]
            await writer.publish("room.recover", count=10)
            assert [m["offset"] for m in await reader.all_messages(10)] == list(range(1, 11))

        await writer.publish("room.recover", count=1000, first=11)

        async with connected(second, "ada") as reader:  # back through the other process
            answer = await reader.subscribe("room.recover", epoch=start["epoch"], offset=10)
            assert answer["result"] == {"epoch": start["epoch"], "offset": 1010, "recovered": 1000}
            recovered = reader.kept("message")  # every recovered message came before the reply
            assert [m["offset"] for m in recovered] == list(range(11, 1011))
            assert [m["data"]["n"] for m in recovered] == list(range(11, 1011))

            await writer.publish("room.recover", first=1011)
            assert [m["offset"] for m in await reader.all_messages(1)] == [1011]


async def test_messages_published_in_another_process_during_a_recovery_arrive_once_in_order(
    servers: list[str],
) -> None:
    first, second = servers
    async with connected(second, "bob") as writer:
        async with connected(first, "ada") as reader:
            start = (await reader.subscribe("room.busy"))["result"]
        await writer.publish("room.busy", count=500)

        publisher = asyncio.create_task(writer.publish("room.busy", count=500, first=501))
        try:
            async with connected(first, "ada") as reader:
                await reader.subscribe("room.busy", epoch=start["epoch"], offset=start["offset"])
                await publisher
                assert [m["offset"] for m in await reader.all_messages(1000)] == list(range(1, 1001))
        finally:
            publisher.cancel()


async def test_reload_verdicts_across_processes(servers: list[str]) -> None:
    first, second = servers
    async with connected(first, "bob") as writer, connected(second, "ada") as reader:
        other = await writer.publish("room.elsewhere", count=2)
        top = await writer.publish("room.verdicts", count=3)
        future = await reader.subscribe("room.verdicts", epoch=top["epoch"], offset=9)
        assert future["result"] == {"epoch": top["epoch"], "offset": 3, "recovered": 0, "reload": "future"}
        await reader.call({"type": "unsubscribe", "stream": "room.verdicts"})
        foreign = await reader.subscribe("room.verdicts", epoch=other["epoch"], offset=1)
        assert foreign["result"]["reload"] == "epoch" and foreign["result"]["epoch"] == top["epoch"]
        assert reader.kept("message") == []


async def test_presence_snapshot_and_diffs_across_processes(servers: list[str]) -> None:
    first, second = servers
    async with connected(first, "ada", "Ada") as ada:
        await ada.subscribe("room.here", presence=True)
        assert [(m["user"], m["connections"]) for m in (await ada.next_of("presence"))["members"]] == [("ada", 1)]

        async with connected(second, "bob", "Bob") as bob, connected(first, "bob", "Bob") as bob_again:
            await bob.subscribe("room.here", presence=True)
            snapshot = await bob.next_of("presence")
            assert sorted((m["user"], m["meta"]["name"], m["connections"]) for m in snapshot["members"]) == [
                ("ada", "Ada", 1),
                ("bob", "Bob", 1),
            ]
            diff = await ada.next_of("presence.diff")
            assert [(m["user"], m["meta"]["name"], m["connections"]) for m in diff["joins"]] == [("bob", "Bob", 1)]

            await bob_again.subscribe("room.here", presence=True)  # a second tab, in the other process
            diff = await ada.next_of("presence.diff")
            assert [(m["user"], m["connections"]) for m in diff["joins"]] == [("bob", 2)]

        seen: dict[str, int] = {}  # both tabs close: one diff or two, as the batches fall, ending with bob gone
        while seen.get("bob") != 0:
            diff = await ada.next_of("presence.diff")
            for entry in diff["joins"] + diff["leaves"]:
                seen[entry["user"]] = entry["connections"]
        assert seen == {"bob": 0}
