"""Channels plug-ins served unchanged on tether: a Channels-style project whose settings call tether.compat.install().

The project in ``project/`` imports only ``channels``, ``channels_redis`` (its layer backend),
djangochannelsrestframework and channelsmultiplexer. It runs under tether's ``runserver`` in a subprocess (the alias
changes ``sys.modules`` for a whole process), on the shared Redis with a key prefix of its own, and the tests talk to
it with the ``websockets`` client.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from tests.conftest import free_port
from tests.project.harness import Command, run_command

PROJECT_DIR = Path(__file__).resolve().parent / "project"
BANNER_END = "quit with CONTROL-C."
TIMEOUT = 10


def compat_env(tmp_dir: Path, prefix: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "compatproject.settings",
        "COMPAT_DB": str(tmp_dir / "db.sqlite3"),
        "COMPAT_REDIS_PREFIX": prefix,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Command]]:
    """The compat project's ``runserver --noreload`` on a free port, with a migrated database of its own."""
    prefix = f"tether-test-compat-{uuid.uuid4().hex[:12]}"
    env = compat_env(tmp_path_factory.mktemp("compat"), prefix)
    code, output = run_command(PROJECT_DIR, "migrate", "--run-syncdb", "--verbosity", "0", **env)
    assert code == 0, output
    address = f"127.0.0.1:{free_port()}"
    try:
        with Command(PROJECT_DIR, "runserver", "--noreload", address, **env) as command:
            command.wait_for_line(BANNER_END)
            yield f"ws://{address}", command
    finally:
        client = redis.Redis(host="127.0.0.1", port=6379)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def send_json(ws: ClientConnection, content: Any) -> None:
    ws.send(json.dumps(content))


def receive_json(ws: ClientConnection) -> Any:
    return json.loads(ws.recv(timeout=TIMEOUT))


def test_server_runs_tethers_runserver_and_names_the_hidden_channels_installation_once(server):
    _, command = server
    banner = command.wait_for_line(BANNER_END)
    assert banner.startswith("tether ")
    assert "(layer: RedisChannelLayer" in banner
    assert "System check identified no issues" in command.output
    hidden = [line for line in command.lines if "the channels package installed at" in line]
    assert len(hidden) == 1, command.output


def test_rest_framework_action_replies_through_the_alias(server):
    url, _ = server
    with connect(f"{url}/ws/api/", open_timeout=TIMEOUT) as ws:
        send_json(ws, {"action": "echo", "request_id": 1, "text": "unchanged"})
        assert receive_json(ws) == {
            "errors": [],
            "data": {"echo": "unchanged"},
            "action": "echo",
            "response_status": 200,
            "request_id": 1,
        }


def test_plug_in_consumers_run_on_tethers_classes_and_redis_layer(server):
    url, _ = server
    with connect(f"{url}/ws/api/", open_timeout=TIMEOUT) as ws:
        send_json(ws, {"action": "where", "request_id": 2})
        assert receive_json(ws)["data"] == {
            "layer": "tether.layers.redis.core.RedisChannelLayer",
            "base": "tether.generic.websocket",
        }


def test_rest_framework_unknown_action_is_a_405_reply(server):
    url, _ = server
    with connect(f"{url}/ws/api/", open_timeout=TIMEOUT) as ws:
        send_json(ws, {"action": "fly", "request_id": 3})
        reply = receive_json(ws)
        assert (reply["action"], reply["response_status"], reply["request_id"]) == ("fly", 405, 3)


def test_model_observer_tells_a_subscriber_about_a_note_another_connection_creates(server):
    url, _ = server
    with connect(f"{url}/ws/notes/", open_timeout=TIMEOUT) as watcher, connect(f"{url}/ws/notes/") as writer:
        send_json(watcher, {"action": "subscribe", "request_id": 10})
        assert receive_json(watcher)["data"] == {"subscribed": True}

        send_json(writer, {"action": "create", "request_id": 11, "data": {"text": "through redis"}})
        created = receive_json(writer)
        assert (created["response_status"], created["data"]["text"]) == (201, "through redis")

        assert receive_json(watcher) == {
            "activity": {"action": "create", "text": "through redis"},
            "request_ids": [10],
        }


@contextlib.contextmanager
def join_streams(url: str) -> Iterator[ClientConnection]:
    """A connection to the demultiplexer whose room stream has joined the group (it says so first)."""
    with connect(f"{url}/ws/streams/", open_timeout=TIMEOUT) as ws:
        assert receive_json(ws) == {"stream": "room", "payload": {"joined": "compat-room"}}
        yield ws


def test_demultiplexer_routes_a_stream_frame_to_its_consumer_and_labels_the_reply(server):
    url, _ = server
    with join_streams(url) as ws:
        send_json(ws, {"stream": "echo", "payload": {"n": 1}})
        assert receive_json(ws) == {"stream": "echo", "payload": {"echo": {"n": 1}}}


def test_demultiplexed_room_stream_fans_out_to_every_connection_through_redis(server):
    url, _ = server
    with join_streams(url) as alice, join_streams(url) as bob:
        send_json(alice, {"stream": "room", "payload": {"text": "hello room"}})
        expected = {"stream": "room", "payload": {"text": "hello room"}}
        assert receive_json(alice) == expected
        assert receive_json(bob) == expected


def test_server_logged_no_error_while_serving_the_plug_ins(server):
    _, command = server
    assert "Traceback" not in command.output
    assert "ERROR" not in command.output
