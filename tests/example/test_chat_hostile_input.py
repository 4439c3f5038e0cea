"""The example's chat consumer against hostile input, over a real server with a real WebSocket client.

Each request below crashed the consumer, echoed the input back, or slipped past the room-name rule before #11 item
6. Every answer must be one short error frame that does not contain what was sent, and the connection must go on
serving (except JSON too deeply nested to decode, which closes with 1007 as any invalid JSON does). Posting is
limited per user, over all of the user's connections.
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


async def still_serving(ws: Any, room: str = "lounge") -> None:
    _, joined = await answer(ws, json.dumps({"type": "join", "room": room}))
    assert (joined["type"], joined["room"]) == ("joined", room), joined


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"type": "join", "room": ["lounge"]}, "bad_room_name"),
        ({"type": "join", "room": {"name": "lounge"}}, "bad_room_name"),
        ({"type": "join", "room": "lounge\n"}, "bad_room_name"),  # "$" would let the newline through
        ({"type": "join", "room": LONG_NAME[: MAX_FRAME_LENGTH - 100]}, "bad_room_name"),
        ({"type": "leave", "room": ["lounge"]}, "bad_room_name"),  # was a crash: a list is not hashable
        ({"type": "leave", "room": {"a": 1}}, "bad_room_name"),
        ({"type": "leave", "room": LONG_NAME[: MAX_FRAME_LENGTH - 100]}, "bad_room_name"),  # was echoed back
        ({"type": "post", "room": {"a": 1}, "text": "hi"}, "bad_room_name"),  # was a crash
        ({"type": "post", "room": ["lounge"], "text": "hi"}, "bad_room_name"),
        ({"type": "post", "room": "lounge\n", "text": "hi"}, "bad_room_name"),
        ({"type": "post", "room": "lounge", "text": {"html": "<b>"}}, "not_joined"),
        ({"type": "x" * (MAX_FRAME_LENGTH - 100)}, "bad_request"),  # the type was echoed back
        ({"type": ["join"]}, "bad_request"),
        ({"type": {"join": 1}}, "bad_request"),
        ([{"type": "join", "room": "lounge"}], "bad_request"),
        ("join", "bad_request"),
        (None, "bad_request"),
    ],
)
async def test_malformed_request_gets_a_short_error_without_its_input(example_server, alice, room, request_body, code):
    async with connect(example_server, await cookie_for(alice)) as ws:
        raw, error = await answer(ws, json.dumps(request_body))
        assert (error["type"], error["code"]) == ("error", code), error
        assert len(raw) < SHORT
        assert "<script>" not in raw and "xxxxxxxx" not in raw and "html" not in raw
        await still_serving(ws)


async def test_a_frame_longer_than_the_limit_is_refused_unread_and_the_connection_stays(example_server, alice, room):
    async with connect(example_server, await cookie_for(alice)) as ws:
        raw, error = await answer(ws, json.dumps({"type": "join", "room": LONG_NAME}))
        assert (error["code"], len(raw) < SHORT, "script" in raw) == ("too_large", True, False)
        raw, error = await answer(ws, "x" * (MAX_FRAME_LENGTH + 1))  # not even JSON: never parsed
        assert error["code"] == "too_large"
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
        raw, error = await answer(ws, json.dumps({"type": "leave", "room": [LONG_NAME[:1000]]}))
        assert (error["code"], len(raw) < SHORT) == ("bad_room_name", True)
        _, error = await answer(ws, json.dumps({"type": "post", "room": {"a": 1}, "text": "hi"}))
        assert error["code"] == "login_required"
        await still_serving(ws)


async def test_posting_is_limited_per_user_over_all_their_connections(example_server, alice, bob, room, monkeypatch):
    # One token back every 1000 s, on a clock that stands still until the test moves it.
    monkeypatch.setattr(ChatConsumer, "post_rate", "3/3000s")
    clock = Clock()
    monkeypatch.setattr(limiter, "clock", clock)
    alice_cookie, bob_cookie = await cookie_for(alice), await cookie_for(bob)
    async with connect(example_server, alice_cookie) as first, connect(example_server, alice_cookie) as second:
        await still_serving(first)
        await still_serving(second)
        for n in range(3):
            _, message = await answer(first, json.dumps({"type": "post", "room": "lounge", "text": f"hi {n}"}))
            assert (message["type"], message["text"]) == ("message", f"hi {n}")
            await asyncio.wait_for(second.recv(), 10)  # the same message, on alice's other connection
        _, error = await answer(first, json.dumps({"type": "post", "room": "lounge", "text": "one too many"}))
        assert (error["code"], error["request"]) == ("rate_limited", "post")
        assert "wait 1000 s" in error["message"]
        _, error = await answer(second, json.dumps({"type": "post", "room": "lounge", "text": "other tab"}))
        assert error["code"] == "rate_limited"
        async with connect(example_server, bob_cookie) as bobs:
            await still_serving(bobs)
            _, message = await answer(bobs, json.dumps({"type": "post", "room": "lounge", "text": "bob is fine"}))
            assert (message["author"], message["text"]) == ("bob", "bob is fine")
        assert json.loads(await asyncio.wait_for(second.recv(), 10))["text"] == "bob is fine"
        clock.advance(1000)  # one token back
        _, message = await answer(second, json.dumps({"type": "post", "room": "lounge", "text": "later"}))
        assert (message["author"], message["text"]) == ("alice", "later")
    assert await database_sync_to_async(Message.objects.count)() == 5
    assert counters()["chat.post"] == 2
