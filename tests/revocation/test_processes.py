"""Sockets follow the login: logout, password change, deactivation, a flushed, deleted or expired session close the
right WebSockets (``AUTH_REVOKED``) in two uvicorn processes sharing a Redis layer, within a second, and no others.

The two servers are subprocesses (tests/revocation/asgi.py) on the suite's database, with a Redis key prefix of this
module's own; the test process triggers revocations as a third process would (a view, a save, a shell), through the
same Redis layer. The in-process tests (the ``serve`` fixture) cover one process without a shared layer, the
anonymous opt-in's details and the setting that turns following off.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from django.conf import settings as django_settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import override_settings

from tests.auth_support import create_user, session_cookie_for
from tests.conftest import free_port
from tests.project.harness import SRC_DIR, Command
from tether.auth import AUTH_REVOKED, make_token, revoke_session, revoke_user
from tether.db import database_sync_to_async
from tether.revocation import followed_connections

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TETHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Nothing listens there: a Redis that is down.
DEAD_REDIS = "redis://127.0.0.1:1/0"
#: The promise: with the Redis layer, a revoked socket is closed within a second.
CLOSE_WITHIN = 1.0
#: The bound of every other wait (connecting, an answer from a socket that stays open).
WAIT = 15.0


def redis_layers(prefix: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "tether.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": prefix},
        }
    }


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    """A key prefix of this module's own on the shared Redis; its keys are deleted afterwards (never a flush)."""
    pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    prefix = f"tether-test-revoke-{secrets.token_hex(6)}"
    yield prefix

    async def delete_own_keys() -> None:
        from tether.layers.redis import RedisChannelLayer

        layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
        try:
            await layer.flush()
        finally:
            await layer.close()

    asyncio.run(delete_own_keys())


@pytest.fixture(scope="module")
def processes(django_db_setup: Any, redis_prefix: str) -> Iterator[tuple[str, str]]:
    """Two uvicorn processes serving tests/revocation/asgi.py on the test database and the shared Redis layer."""
    commands = []
    hosts = []
    try:
        for _ in range(2):
            port = free_port()
            commands.append(
                Command(
                    ROOT,
                    "tests.revocation.asgi:application",
                    *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off", "--log-level", "info"),
                    program=("-m", "uvicorn"),
                    DJANGO_SETTINGS_MODULE="tests.revocation.settings",
                    PYTHONPATH=os.pathsep.join([str(SRC_DIR), str(ROOT)]),
                    TETHER_REVOCATION_PREFIX=redis_prefix,
                )
            )
            hosts.append(f"127.0.0.1:{port}")
        for command in commands:
            command.wait_for_line("Uvicorn running on", timeout=60)
        yield hosts[0], hosts[1]
    finally:
        for command in commands:
            command.stop()


@pytest.fixture
def shared_layer(settings: Any, redis_prefix: str) -> None:
    """The test process publishes on the servers' Redis layer, as a third process of the same site would."""
    settings.CHANNEL_LAYERS = redis_layers(redis_prefix)


# --- helpers ------------------------------------------------------------------------------------------------------


class Socket:
    """A client WebSocket and the first message its consumer sent (who the user is)."""

    def __init__(self, ws: Any, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello


async def open_socket(
    host: str, path: str = "ws/followed/", cookie: str | None = None, token: str | None = None
) -> Socket:
    headers = {"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={cookie}"} if cookie else None
    ws = await websockets.connect(
        f"ws://{host}/{path}",
        additional_headers=headers,
        subprotocols=[f"token.{token}"] if token else None,  # type: ignore[list-item]
        open_timeout=WAIT,
    )
    hello = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return Socket(ws, hello)


async def close_code(socket: Socket, within: float) -> int | None:
    """The close code the server sent within ``within`` seconds (messages before it are skipped), or None."""
    deadline = time.monotonic() + within
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.wait_for(socket.ws.recv(), remaining)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006
    except asyncio.TimeoutError:
        return None


async def codes_within(sockets: list[Socket], within: float = CLOSE_WITHIN) -> list[int | None]:
    return list(await asyncio.gather(*(close_code(socket, within) for socket in sockets)))


async def answer(socket: Socket) -> dict[str, Any]:
    """Proof that the socket is open: it answers a frame, saying who the user is now."""
    await socket.ws.send("{}")
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(socket.ws.recv(), WAIT))
    return reply


async def close_all(sockets: list[Socket]) -> None:
    await asyncio.gather(*(socket.ws.close() for socket in sockets), return_exceptions=True)


async def assert_only_ended_closed(ended: list[Socket], kept: list[Socket], within: float = CLOSE_WITHIN) -> None:
    """Every socket of ``ended`` is closed with AUTH_REVOKED within ``within`` s; every one of ``kept`` answers, still
    logged in (asked after the closes, so a late close of a kept socket would show)."""
    assert await codes_within(ended, within) == [AUTH_REVOKED] * len(ended)
    for socket in kept:
        assert (await answer(socket))["authenticated"]
    await close_all(kept)


def http_get(url: str, cookie: str) -> int:
    request = urllib.request.Request(url, headers={"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={cookie}"})
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return int(response.status)


@database_sync_to_async
def users_and_sessions() -> tuple[Any, Any, str, str, str]:
    """alice with two sessions, bob with one."""
    alice, bob = create_user("alice"), create_user("bob")
    return alice, bob, session_cookie_for(alice), session_cookie_for(alice), session_cookie_for(bob)


async def sockets_of(hosts: tuple[str, str], cookie: str) -> list[Socket]:
    """One async and one sync consumer's socket of session ``cookie`` in each process."""
    return [await open_socket(host, path, cookie) for host in hosts for path in ("ws/followed/", "ws/sync/")]


# --- two processes, one Redis layer -------------------------------------------------------------------------------


async def test_a_logout_closes_that_sessions_sockets_in_both_processes_and_no_others(processes, shared_layer):
    alice, _, session, other_session, bobs = await users_and_sessions()
    ended = await sockets_of(processes, session)
    token_socket = await open_socket(processes[1], token=make_token(alice, session=session))
    kept = [*await sockets_of(processes, other_session), *await sockets_of(processes, bobs)]
    assert all(socket.hello["authenticated"] for socket in [*ended, token_socket, *kept])

    assert await asyncio.to_thread(http_get, f"http://{processes[0]}/logout/", session) == 200

    await assert_only_ended_closed([*ended, token_socket], kept)


async def test_a_password_change_closes_all_the_users_sockets_in_both_processes(processes, shared_layer):
    alice, _, session, other_session, bobs = await users_and_sessions()
    ended = [*await sockets_of(processes, session), *await sockets_of(processes, other_session)]
    ended.append(await open_socket(processes[0], token=make_token(alice)))  # a token bound to no session
    kept = await sockets_of(processes, bobs)

    alice.set_password("a brand new password")
    await alice.asave()

    await assert_only_ended_closed(ended, kept)


async def test_deactivation_closes_all_the_users_sockets_in_both_processes(processes, shared_layer):
    alice, _, session, other_session, bobs = await users_and_sessions()
    ended = [*await sockets_of(processes, session), *await sockets_of(processes, other_session)]
    kept = await sockets_of(processes, bobs)

    alice.is_active = False
    await alice.asave(update_fields=["is_active"])

    await assert_only_ended_closed(ended, kept)


async def test_revoke_session_closes_that_sessions_sockets_in_both_processes(processes, shared_layer):
    """The documented function, for sessions ended in ways tether does not hear (called from sync code)."""
    _, _, session, other_session, bobs = await users_and_sessions()
    ended = await sockets_of(processes, session)
    kept = [*await sockets_of(processes, other_session), *await sockets_of(processes, bobs)]

    await database_sync_to_async(revoke_session)(session)

    await assert_only_ended_closed(ended, kept)


async def test_deleting_the_database_session_closes_its_sockets_in_both_processes(processes, shared_layer):
    _, _, session, other_session, _ = await users_and_sessions()
    ended = await sockets_of(processes, session)
    kept = await sockets_of(processes, other_session)

    await database_sync_to_async(lambda: Session.objects.get(session_key=session).delete())()

    await assert_only_ended_closed(ended, kept)


async def test_session_expiry_closes_its_sockets_in_both_processes(processes, shared_layer):
    """Each process's timer fires at the stored expiry date; the same user's other session is not touched."""
    _, _, session, other_session, _ = await users_and_sessions()
    lifetime = 4.0

    def expire_soon() -> float:
        store = SessionStore(session)
        store.set_expiry(int(lifetime))
        store.save()
        return time.monotonic() + lifetime

    expires_at = await database_sync_to_async(expire_soon)()
    ended = await sockets_of(processes, session)
    kept = await sockets_of(processes, other_session)
    assert time.monotonic() < expires_at, "the sockets took longer to open than the session lived; nothing proven"
    for socket in ended:
        assert (await answer(socket))["authenticated"]  # open until the expiry date

    await assert_only_ended_closed(ended, kept, within=expires_at - time.monotonic() + CLOSE_WITHIN)


async def test_a_consumer_that_opted_in_carries_on_as_anonymous_in_both_processes(processes, shared_layer):
    _, _, session, _, _ = await users_and_sessions()
    sockets = [
        await open_socket(processes[0], "ws/anonymous-after/", session),
        await open_socket(processes[1], "ws/sync-anonymous-after/", session),
    ]

    assert await asyncio.to_thread(http_get, f"http://{processes[0]}/logout/", session) == 200

    for socket in sockets:
        notice = json.loads(await asyncio.wait_for(socket.ws.recv(), CLOSE_WITHIN))
        assert notice == {"authenticated": False, "username": None, "revoked": "logout"}
        assert (await answer(socket))["authenticated"] is False
    await close_all(sockets)


async def test_a_token_bound_to_a_session_is_refused_after_the_logout(processes, shared_layer):
    alice, _, session, _, _ = await users_and_sessions()
    token = make_token(alice, session=session)
    assert (await open_socket(processes[1], token=token)).hello["authenticated"]

    assert await asyncio.to_thread(http_get, f"http://{processes[0]}/logout/", session) == 200

    refused = await open_socket(processes[1], token=token)
    assert refused.hello == {"authenticated": False, "username": None}
    await close_all([refused])


# --- one process ---------------------------------------------------------------------------------------------------


def site(serve: Any) -> str:
    """The test application on an in-process uvicorn, with Django's views for HTTP (tests.revocation.support)."""
    from django.core.asgi import get_asgi_application

    from tests.revocation.support import websocket_app
    from tether.routing import ProtocolTypeRouter

    server = serve(ProtocolTypeRouter({"http": get_asgi_application(), "websocket": websocket_app}))
    return f"{server.host}:{server.port}"


async def poll(condition: Any, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)


@override_settings(ROOT_URLCONF="tests.revocation.support")
async def test_without_a_shared_layer_one_process_still_closes_its_sockets(serve):
    host = site(serve)
    _, _, session, other_session, _ = await users_and_sessions()
    ended = [await open_socket(host, "ws/followed/", session), await open_socket(host, "ws/sync/", session)]
    kept = await open_socket(host, "ws/followed/", other_session)
    assert followed_connections() == 3

    assert await asyncio.to_thread(http_get, f"http://{host}/logout/", session) == 200

    await assert_only_ended_closed(ended, [kept])
    await poll(lambda: followed_connections() == 0)


async def test_tether_logout_keeps_the_calling_socket_and_closes_the_sessions_others(serve):
    from tests.revocation.support import disconnect_codes

    disconnect_codes.clear()
    host = site(serve)
    _, _, session, _, _ = await users_and_sessions()
    caller, other = await open_socket(host, cookie=session), await open_socket(host, cookie=session)

    await caller.ws.send(json.dumps({"logout": True}))
    assert json.loads(await asyncio.wait_for(caller.ws.recv(), WAIT)) == {"authenticated": False, "username": None}

    assert await codes_within([other]) == [AUTH_REVOKED]
    assert (await answer(caller))["authenticated"] is False
    await poll(lambda: AUTH_REVOKED in disconnect_codes)  # the consumer heard the close as any other
    await close_all([caller])


async def test_revoke_user_takes_a_primary_key_too(serve):
    host = site(serve)
    alice, _, session, _, bobs = await users_and_sessions()
    ended, kept = await open_socket(host, cookie=session), await open_socket(host, cookie=bobs)

    await database_sync_to_async(revoke_user)(alice.pk)

    await assert_only_ended_closed([ended], [kept])


async def test_anonymous_and_invalid_sessions_are_not_followed(serve):
    host = site(serve)
    anonymous = await open_socket(host)
    stale = await open_socket(host, cookie="no-such-session-key")
    assert not anonymous.hello["authenticated"] and not stale.hello["authenticated"]
    assert followed_connections() == 0
    await close_all([anonymous, stale])


@override_settings(TETHER_FOLLOW_LOGIN=False, ROOT_URLCONF="tests.revocation.support")
async def test_the_setting_turns_following_off(serve):
    host = site(serve)
    _, _, session, _, _ = await users_and_sessions()
    socket = await open_socket(host, "ws/anonymous-after/", session)
    assert socket.hello["followed"] is False
    assert followed_connections() == 0

    assert await asyncio.to_thread(http_get, f"http://{host}/logout/", session) == 200

    assert (await answer(socket))["authenticated"]  # the snapshot taken at connection time, as in Channels
    await close_all([socket])


def test_carry_on_anonymous_needs_an_auth_revoked_handler():
    from tether.auth import carry_on_anonymous

    class Forgetful:
        scope: dict[str, Any] = {}

    with pytest.raises(TypeError, match="auth_revoked"):
        carry_on_anonymous(Forgetful())


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "tether.layers.redis.RedisChannelLayer", "CONFIG": {"hosts": [DEAD_REDIS]}}}
)
async def test_with_the_layer_unreachable_sockets_open_and_logouts_still_close_this_process(serve, caplog):
    """Redis down: the first socket waits for the listener briefly, the next ones not at all; a revocation closes
    this process's sockets, says the other processes were not told, and returns."""
    pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")
    from tether.revocation.listener import _LISTENER_READY_TIMEOUT

    host = site(serve)
    _, _, session, other_session, _ = await users_and_sessions()
    first = await open_socket(host, cookie=session)
    started = time.monotonic()
    second = await open_socket(host, cookie=other_session)
    assert time.monotonic() - started < _LISTENER_READY_TIMEOUT

    await asyncio.wait_for(database_sync_to_async(revoke_session)(session), WAIT)

    await assert_only_ended_closed([first], [second])
    assert "Could not tell the other processes that a login ended (session_ended)" in caplog.text


def timer_armed() -> bool:
    """Whether a followed connection of this process has its expiry timer armed."""
    from tether.revocation.registry import registry

    with registry.lock:
        return any(watch.expiry is not None for watches in registry.by_user.values() for watch in watches)


async def test_a_session_extended_before_its_expiry_keeps_its_socket_open(serve):
    """The timer fires at the expiry date read at connection time; the session was saved again meanwhile (as
    SESSION_SAVE_EVERY_REQUEST does), so the check re-arms instead of closing."""
    host = site(serve)
    _, _, session, _, _ = await users_and_sessions()

    def set_expiry(seconds: int) -> float:
        store = SessionStore(session)
        store.set_expiry(seconds)
        store.save()
        return time.monotonic() + seconds

    first_expiry = await database_sync_to_async(set_expiry)(2)
    socket = await open_socket(host, cookie=session)
    await poll(timer_armed)  # the expiry reader has read the 2-second date
    await database_sync_to_async(set_expiry)(60)

    assert await codes_within([socket], first_expiry - time.monotonic() + CLOSE_WITHIN) == [None]
    assert (await answer(socket))["authenticated"]
    await close_all([socket])


@override_settings(CHANNEL_LAYERS={}, ROOT_URLCONF="tests.revocation.support")
async def test_without_a_channel_layer_the_opted_in_consumer_hears_right_after_the_next_frame(serve):
    """Its receive was waiting already when the login ended: the next frame comes first, then the notice."""
    host = site(serve)
    _, _, session, _, _ = await users_and_sessions()
    socket = await open_socket(host, "ws/anonymous-after/", session)

    assert await asyncio.to_thread(http_get, f"http://{host}/logout/", session) == 200

    assert (await answer(socket)) == {"authenticated": False, "username": None}  # scope["user"] changed at once
    notice = json.loads(await asyncio.wait_for(socket.ws.recv(), WAIT))
    assert notice == {"authenticated": False, "username": None, "revoked": "logout"}
    await close_all([socket])
