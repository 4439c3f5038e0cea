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
from typing import Any

import pytest

from tests.project.harness import Command, copy_project, delete_redis_prefix, uvicorn_processes
from tests.streams.protocol_client import WAIT, connected

REDIS_URL = os.environ.get("TETHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> Iterator[str]:
    """The Redis key prefix of this test's servers; what they leave under it is deleted afterwards."""
    pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    prefix = f"tether-test-protocol-{secrets.token_hex(6)}"
    try:
        yield prefix
    finally:
        asyncio.run(delete_redis_prefix(REDIS_URL, prefix))


@pytest.fixture
def processes(tmp_path: Path, prefix: str) -> Iterator[list[Command]]:
    """Two uvicorn processes of the test project's stream app on the shared Redis; afterwards, the only tracebacks
    in their output are those of the test app's handlers that raise on purpose."""
    project = copy_project(tmp_path / "project")
    # A subscriber's channel holds a whole burst of these tests (500 messages): they are about order across a
    # recovery and across processes, not about a full channel, whose dropped live messages a subscriber only gets
    # back with the next message or subscribe (docs/protocol.md); with the default 100, a reader slowed by a loaded
    # machine dropped the end of a burst.
    env = {
        "PROJECT_REDIS_PREFIX": prefix,
        "PROJECT_REDIS_URL": REDIS_URL,
        "PROJECT_PRESENCE_TTL": "2",
        "PROJECT_CAPACITY": "2000",
    }
    with uvicorn_processes(project, [env, env], "--lifespan", "off", app="project.streams_app:application") as commands:
        yield commands
        for command in commands:
            on_purpose = sum(line.startswith("RuntimeError: a request handler failed") for line in command.lines)
            assert command.output.count("Traceback") == on_purpose, command.output


@pytest.fixture
def servers(processes: list[Command]) -> list[str]:
    """The ``ws://host:port`` of the two processes."""
    return [f"ws://{command.host}" for command in processes]


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


async def test_every_error_code_is_replied_by_a_process_on_the_redis_layer(servers: list[str]) -> None:
    frames_and_codes = [
        ({"type": "subscribe", "stream": 5}, "bad_request"),
        ({"type": "subscribe", "stream": "room a"}, "bad_request"),
        ({"type": "publish"}, "unknown_type"),
        ({"type": "subscribe", "stream": "private.bob"}, "forbidden"),
        ({"type": "subscribe", "stream": "missing.room"}, "not_found"),
        ({"type": "request", "method": "nothing"}, "not_found"),
        ({"type": "subscribe", "stream": "room.a", "epoch": "e", "offset": "garbage"}, "bad_position"),
        ({"type": "subscribe", "stream": "room.a", "epoch": "e", "offset": -3}, "bad_position"),
        ({"type": "request", "method": "refuse"}, "not_allowed"),
        ({"type": "request", "method": "crash"}, "internal"),
    ]
    async with connected(servers[0], "ada", "x" * 5000) as client:
        for frame, code in frames_and_codes:
            answer = await client.call(frame)
            assert answer["error"]["code"] == code, (frame, answer)
        oversized = await client.subscribe("room.meta", presence=True)
        assert oversized["error"]["code"] == "bad_request" and "max_metadata_size" in oversized["error"]["message"]
        assert "result" in await client.subscribe("room.meta")


async def redis_keys_holding(prefix: str, pattern: str) -> list[str]:
    """The keys under ``prefix`` matching ``pattern`` that hold members (of a group, of a presence); not the
    group's per-process list tokens (``:#``), which are bookkeeping of the layer's, not state of a connection."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        found = []
        async for key in client.scan_iter(match=f"{prefix}:{pattern}", count=1000):
            kind = (await client.type(key)).decode()
            size = {"zset": client.zcard, "hash": client.hlen, "set": client.scard}.get(kind)
            if size is not None and not key.endswith(b":#") and await size(key):
                found.append(key.decode())
        return found
    finally:
        await client.aclose()


async def test_thousands_of_subscribe_requests_leave_no_group_or_presence_in_redis_and_one_log_line(
    processes: list[Command], servers: list[str], prefix: str
) -> None:
    async with connected(servers[0], "mallory") as client:
        for n in range(20):  # the app's max_subscriptions
            assert "result" in await client.subscribe(f"room.flood-{n}", presence=True)
        for n in range(1000, 3000):
            await client.send({"type": "subscribe", "id": n, "stream": f"room.flood-{n}", "presence": True})
        codes = {(await client.reply_to(n))["error"]["code"] for n in range(1000, 3000)}
        assert codes == {"too_many_subscriptions"}
        assert len(await redis_keys_holding(prefix, "g:{room.flood-*}*")) == 40  # 20 streams, 20 presence events
        assert len(await redis_keys_holding(prefix, "p:{room.flood-*}")) == 20  # present in the 20
        assert await redis_keys_holding(prefix, "[gp]:{*room.flood-[123]???}*") == []  # nothing of the refused

    deadline = asyncio.get_running_loop().time() + WAIT
    while await redis_keys_holding(prefix, "[gp]:{*room.flood-*}*"):
        assert asyncio.get_running_loop().time() < deadline, await redis_keys_holding(prefix, "[gp]:{*room.flood-*}*")
        await asyncio.sleep(0.05)
    refusals = [line for line in processes[0].lines if "refused a frame (too_many_subscriptions)" in line]
    assert len(refusals) == 1, processes[0].output


async def test_a_redis_restart_without_persistence_tells_a_subscribed_client_to_reload(
    tmp_path: Path, redis_servers: Any
) -> None:
    redis_server = redis_servers.start()
    project = copy_project(tmp_path / "project")
    env = {"PROJECT_REDIS_PREFIX": "tether-test-protocol", "PROJECT_REDIS_URL": redis_server.url}
    with uvicorn_processes(project, [env, env], "--lifespan", "off", app="project.streams_app:application") as commands:
        first, second = (f"ws://{command.host}" for command in commands)
        async with connected(first, "ada") as reader, connected(second, "bob") as writer:
            start = (await reader.subscribe("room.restart"))["result"]
            await writer.publish("room.restart", count=3)
            assert [m["offset"] for m in await reader.all_messages(3)] == [1, 2, 3]

            redis_server.kill()
            redis_server.start()
            deadline = asyncio.get_running_loop().time() + WAIT
            while "result" not in (answer := await writer.request("publish", stream="room.restart")):
                assert asyncio.get_running_loop().time() < deadline, answer
                await asyncio.sleep(0.1)
            assert answer["result"]["epoch"] != start["epoch"]
            # The reader's process puts its membership back within one watch interval (5 s by default) of noticing,
            # and its connection then gets the new epoch's message, or the watch's news: either ends in a reload.
            reload = await asyncio.wait_for(reader.next_of("reload"), WAIT)
            assert (reload["reason"], reload["epoch"]) == ("epoch", answer["result"]["epoch"])
