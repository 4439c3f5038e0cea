"""The example's chat consumer against hostile input, over a real server with a real WebSocket client.

Each request below crashed the consumer, echoed the input back, or slipped past the room-name rule before #11 item
6 (the consumer spoke a protocol of its own then; it speaks tether's stream protocol now). Every answer must be one
short error reply, without the markup or the room name that was sent, and the connection must go on serving (except
JSON too deeply nested to decode, which closes with 1007 as any invalid JSON does). Posting is limited per user, over
all of the user's connections.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from django.contrib.auth.models import User

from chat.consumers import MAX_FRAME_LENGTH, ChatConsumer
from chat.models import Message
from tests.auth_support import session_cookie_for
from tests.ratelimit.conftest import Clock
from tether.db import database_sync_to_async
from tether.ratelimit import counters, limiter

#: An error frame is this short whatever the request was.
SHORT = 300
LONG_NAME = "<script>alert(1)</script>" * 4000


@pytest.fixture
def example_server(serve: Callable[..., Any], transactional_db: None) -> Any:
    """The example's whole ASGI application (origin check, session auth, routes) on a real uvicorn server."""
    from chatsite.asgi import application

    return serve(application)


async def cookie_for(user: User) -> str:
    return await database_sync_to_async(session_cookie_for)(user)


def connect(server: Any, cookie: str | None = None, path: str = "/chat/connect/") -> Any:
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    return websockets.connect(
        f"{server.ws_url}{path}", origin=f"http://127.0.0.1:{server.port}", additional_headers=headers, open_timeout=10
    )


async def answer(ws: Any, frame: str) -> tuple[str, dict[str, Any]]:
    """Send ``frame``; the next frame the server sends, raw and decoded."""
    await ws.send(frame)
    raw = await asyncio.wait_for(ws.recv(), 10)
    return raw, json.loads(raw)


def request(method: str, **params: Any) -> str:
    return json.dumps({"type": "request", "id": 1, "method": method, "params": params})


async def still_serving(ws: Any, room: str = "lounge") -> None:
    _, reply = await answer(ws, request("history", room=room))
    assert reply["result"]["room"] == room, reply


async def post(ws: Any, text: str) -> dict[str, Any]:
    """Post ``text`` in the lounge; the reply's result or error."""
    _, reply = await answer(ws, request("post", room="lounge", text=text))
    assert reply["type"] == "reply", reply
    return reply.get("result") or reply["error"]


LONG_ROOM = LONG_NAME[: MAX_FRAME_LENGTH - 100]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (request("history", room=["lounge"]), "bad_room_name"),
        (request("history", room={"name": "lounge"}), "bad_room_name"),
        (request("history", room="lounge\n"), "bad_room_name"),  # "$" would let the newline through
        (request("history", room=LONG_ROOM), "bad_room_name"),
        (request("post", room={"a": 1}, text="hi"), "bad_room_name"),
        (request("post", room=["lounge"], text="hi"), "bad_room_name"),
        (request("post", room="lounge\n", text="hi"), "bad_room_name"),
        (request("post", room=LONG_ROOM, text="hi"), "bad_room_name"),
        (request("post", room="lounge", text={"html": "<b>"}), "empty_message"),
        (request("typing", room=LONG_ROOM), "bad_room_name"),
        (json.dumps({"type": ["join"], "id": 1}), "bad_request"),
        (json.dumps({"type": {"join": 1}, "id": 1}), "bad_request"),
        (json.dumps([{"type": "request", "id": 1}]), "bad_request"),
        (json.dumps("join"), "bad_request"),
        (json.dumps(None), "bad_request"),
    ],
)
async def test_malformed_request_gets_a_short_error_without_its_input(example_server, alice, room, frame, code):
    async with connect(example_server, await cookie_for(alice)) as ws:
        raw, reply = await answer(ws, frame)
        assert (reply["type"], reply["error"]["code"]) == ("reply", code), reply
        assert len(raw) < SHORT
        assert "<script>" not in raw and "html" not in raw and "lounge" not in raw
        await still_serving(ws)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "x" * (MAX_FRAME_LENGTH - 100), "id": 1}, "unknown_type"),
        ({"type": "subscribe", "id": 1, "stream": "chat.room." + LONG_ROOM}, "bad_request"),
        ({"type": "subscribe", "id": 1, "stream": "chat.room.<script>"}, "bad_request"),
        ({"type": "request", "id": 1, "method": LONG_ROOM, "params": {}}, "not_found"),
    ],
)
async def test_a_bad_frame_type_stream_or_method_name_is_answered_with_a_short_error(
    example_server, alice, room, frame, code
):
    # The stream protocol names an unknown type, stream or method by its first few characters (as data in a
    # JSON string, which the page shows as text): short, whatever was sent.
    async with connect(example_server, await cookie_for(alice)) as ws:
        raw, reply = await answer(ws, json.dumps(frame))
        assert reply["error"]["code"] == code
        assert len(raw) < SHORT
        await still_serving(ws)


async def test_a_frame_longer_than_the_limit_is_refused_unread_and_the_connection_stays(example_server, alice, room):
    async with connect(example_server, await cookie_for(alice)) as ws:
        raw, reply = await answer(ws, request("history", room=LONG_NAME))
        assert (reply["error"]["code"], len(raw) < SHORT, "script" in raw) == ("too_large", True, False)
        raw, reply = await answer(ws, "x" * (MAX_FRAME_LENGTH + 1))  # not even JSON: never parsed
        assert reply["error"]["code"] == "too_large"
        await still_serving(ws)


async def test_json_nested_too_deeply_closes_with_1007_instead_of_crashing(example_server, alice, room):
    async with connect(example_server, await cookie_for(alice)) as ws:
        await ws.send("[" * (MAX_FRAME_LENGTH - 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, closed.value
    # A crash would end the connection without a close frame (rcvd None) or with 1011.
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1007, "JSON nested deeper than 64 levels")


async def test_a_guest_gets_the_same_short_errors(example_server, room):
    async with connect(example_server) as ws:
        raw, reply = await answer(ws, request("history", room=[LONG_NAME[:1000]]))
        assert (reply["error"]["code"], len(raw) < SHORT) == ("bad_room_name", True)
        _, reply = await answer(ws, request("post", room={"a": 1}, text="hi"))
        assert reply["error"]["code"] == "login_required"
        await still_serving(ws)


async def test_posting_is_limited_per_user_over_all_their_connections(example_server, alice, bob, room, monkeypatch):
    # One token back every 1000 s, on a clock that stands still until the test moves it.
    monkeypatch.setattr(ChatConsumer, "post_rate", "3/3000s")
    clock = Clock()
    monkeypatch.setattr(limiter, "clock", clock)
    alice_cookie, bob_cookie = await cookie_for(alice), await cookie_for(bob)
    async with connect(example_server, alice_cookie) as first, connect(example_server, alice_cookie) as second:
        for n in range(3):
            assert "id" in await post(first, f"hi {n}")
        error = await post(first, "one too many")
        assert error["code"] == "rate_limited"
        assert "wait 1000 s" in error["message"]
        assert (await post(second, "other tab"))["code"] == "rate_limited"
        async with connect(example_server, bob_cookie) as bobs:
            assert "id" in await post(bobs, "bob is fine")
        clock.advance(1000)  # one token back
        assert "id" in await post(second, "later")
    assert await database_sync_to_async(Message.objects.count)() == 5
    assert counters()["chat.post"] == 2
