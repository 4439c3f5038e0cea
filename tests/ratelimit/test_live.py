"""Rate limits against a real uvicorn server, with the in-memory store: handshakes refused with 429 and
``Retry-After``, messages refused with an error event or 4429, each limit recovered once the clock moves on.

Rates refill one token per 1000 s or slower unless a test moves the limiter's clock itself, so no test depends on
how fast the machine runs: "still limited" holds however slow the run, and "recovered" follows ``clock.advance``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from django.urls import path

from tests.test_denial import handshake
from tether.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer, JsonWebsocketConsumer
from tether.ratelimit import RATE_LIMITED, counters
from tether.routing import URLRouter

WAIT = 10.0


class Echo(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(content)


class SyncEcho(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json(content)


class PlainEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)


class Strict(Echo):
    """Its own limits: one message per connection per 1000 s, and no handshake limit at all."""

    rate_limits = {"messages_per_connection": "1/1000s", "connect_per_ip": None}


def with_user(app: Any) -> Any:
    """Put the user named by ``?user=<pk>`` in the scope, as an auth middleware would."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        query = scope.get("query_string", b"").decode()
        if query.startswith("user="):
            scope = {**scope, "user": SimpleNamespace(is_authenticated=True, pk=int(query[5:]))}
        await app(scope, receive, send)

    return wrapped


application = with_user(
    URLRouter(
        [
            path("echo/", Echo.as_asgi()),
            path("sync/", SyncEcho.as_asgi()),
            path("plain/", PlainEcho.as_asgi()),
            path("strict/", Strict.as_asgi()),
        ]
    )
)


def connect(server: Any, route: str) -> Any:
    return websockets.connect(f"{server.ws_url}/{route}", open_timeout=WAIT, close_timeout=WAIT)


async def echo(ws: Any, number: int) -> dict[str, Any]:
    await ws.send(json.dumps({"n": number}))
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def closed_with(ws: Any) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.parametrize("route", ["echo/", "sync/"])
async def test_handshakes_over_the_address_limit_get_429_with_retry_after_then_recover(
    serve, settings, clock, caplog, route
):
    settings.TETHER_RATE_LIMITS = {"connect_per_ip": "2/2000s"}
    server = serve(application)
    with caplog.at_level(logging.WARNING, logger="tether.ratelimit"):
        for _ in range(2):
            async with connect(server, route) as ws:
                assert await echo(ws, 1) == {"n": 1}
        for _ in range(3):
            status, headers, body = await handshake(server, route)
            assert (status, headers["retry-after"]) == (429, "1000")
            assert json.loads(body) == {"error": "rate_limited", "limit": "connect_per_ip", "retry_after": 1000}
            assert headers["content-type"] == "application/json"
    assert counters() == {"connect_per_ip": 3}
    [logged] = [record.getMessage() for record in caplog.records if record.name == "tether.ratelimit"]
    assert "handshakes from 127.0.0.1 are over connect_per_ip; refused with 429" in logged
    clock.advance(1000)
    async with connect(server, route) as ws:
        assert await echo(ws, 2) == {"n": 2}
    status, _, _ = await handshake(server, route)
    assert status == 429


async def test_the_user_limit_counts_a_users_handshakes_and_not_anyone_elses(serve, settings, clock):
    settings.TETHER_RATE_LIMITS = {"connect_per_user": "1/1000s"}
    server = serve(application)
    async with connect(server, "echo/?user=1") as ws:
        assert await echo(ws, 1) == {"n": 1}
    assert (await handshake(server, "echo/?user=1"))[0] == 429
    async with connect(server, "echo/?user=2"), connect(server, "echo/"), connect(server, "echo/"):
        pass  # another user, and guests, who have no user bucket
    assert counters() == {"connect_per_user": 1}


@pytest.mark.parametrize("route", ["echo/", "sync/"])
async def test_json_messages_over_the_limit_get_an_error_event_and_recover(serve, settings, clock, route):
    settings.TETHER_RATE_LIMITS = {"messages_per_connection": "3/3000s"}
    server = serve(application)
    async with connect(server, route) as ws:
        assert [await echo(ws, n) for n in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
        refused = await echo(ws, 3)
        assert refused == {
            "type": "error",
            "code": "rate_limited",
            "limit": "messages_per_connection",
            "retry_after": 1000.0,
            "message": "Too many messages: wait 1000 s before sending again.",
        }
        clock.advance(1000)
        assert await echo(ws, 4) == {"n": 4}
        assert (await echo(ws, 5))["code"] == "rate_limited"
    assert counters() == {"messages_per_connection": 2}


async def test_a_json_client_that_keeps_sending_is_closed_with_4429_after_ten_refusals(serve, settings, clock, caplog):
    settings.TETHER_RATE_LIMITS = {"messages_per_connection": "1/1000s"}
    server = serve(application)
    with caplog.at_level(logging.WARNING, logger="tether.ratelimit"):
        async with connect(server, "echo/") as ws:
            assert await echo(ws, 0) == {"n": 0}
            for n in range(1, 10):
                assert (await echo(ws, n))["code"] == "rate_limited"
            await ws.send(json.dumps({"n": 10}))
            assert await closed_with(ws) == (RATE_LIMITED, "Rate limit exceeded: messages_per_connection")
    logged = [record.getMessage() for record in caplog.records if record.name == "tether.ratelimit"]
    assert len(logged) == 1 and "over messages_per_connection (1/1000s) are refused" in logged[0]


async def test_a_plain_consumer_closes_with_4429_at_the_first_refused_message(serve, settings, clock):
    settings.TETHER_RATE_LIMITS = {"messages_per_connection": "2/2000s"}
    server = serve(application)
    async with connect(server, "plain/") as ws:
        for text in ("a", "b"):
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), WAIT) == text
        await ws.send("c")
        assert await closed_with(ws) == (RATE_LIMITED, "Rate limit exceeded: messages_per_connection")


async def test_the_user_message_limit_is_shared_by_the_users_connections(serve, settings, clock):
    settings.TETHER_RATE_LIMITS = {"messages_per_user": "3/3000s"}
    server = serve(application)
    async with connect(server, "echo/?user=7") as first, connect(server, "echo/?user=7") as second:
        assert await echo(first, 1) == {"n": 1}
        assert await echo(second, 2) == {"n": 2}
        assert await echo(first, 3) == {"n": 3}
        assert (await echo(second, 4))["limit"] == "messages_per_user"
        assert (await echo(first, 5))["limit"] == "messages_per_user"
        async with connect(server, "echo/?user=8") as other, connect(server, "echo/") as guest:
            assert await echo(other, 6) == {"n": 6}
            assert [await echo(guest, n) for n in range(5)] == [{"n": n} for n in range(5)]
        clock.advance(1000)
        assert await echo(second, 7) == {"n": 7}


async def test_a_consumers_own_limits_replace_the_projects(serve, settings, clock):
    settings.TETHER_RATE_LIMITS = {"connect_per_ip": "1/1000s", "messages_per_connection": "100/s"}
    server = serve(application)
    for _ in range(3):  # Strict turns the handshake limit off, and the project's bucket is not touched
        async with connect(server, "strict/") as ws:
            assert await echo(ws, 1) == {"n": 1}
            assert (await echo(ws, 2))["retry_after"] == 1000.0
    async with connect(server, "echo/") as ws:  # the project's limits: one handshake, many messages
        assert [await echo(ws, n) for n in range(10)] == [{"n": n} for n in range(10)]
    assert (await handshake(server, "echo/"))[0] == 429


async def test_a_forwarded_address_counts_only_when_proxies_are_trusted(serve, settings, clock):
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    settings.TETHER_RATE_LIMITS = {"connect_per_ip": "1/1000s"}
    # uvicorn rewrites scope["client"] from the header itself for connections from 127.0.0.1 unless told not to.
    server = serve(application, proxy_headers=False)
    async with websockets.connect(f"{server.ws_url}/echo/", additional_headers=forwarded, open_timeout=WAIT):
        pass
    with pytest.raises(websockets.InvalidStatus) as refused:  # the header is ignored: it is 127.0.0.1 again
        await websockets.connect(f"{server.ws_url}/echo/", additional_headers={"X-Forwarded-For": "1.2.3.4"})
    assert refused.value.response.status_code == 429

    settings.TETHER_RATE_LIMITS = {"connect_per_ip": "1/1000s", "trusted_proxies": 1}
    for address in ("203.0.113.9", "203.0.113.10"):
        async with websockets.connect(
            f"{server.ws_url}/echo/", additional_headers={"X-Forwarded-For": address}, open_timeout=WAIT
        ):
            pass
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(f"{server.ws_url}/echo/", additional_headers={"X-Forwarded-For": "203.0.113.9"})
