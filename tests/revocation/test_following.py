"""Following one connection without a server: the races around the user lookup, and what the application may still
send once its connection was closed. The ASGI ``send`` is a list; the channel layer is the suite's in-memory one, so
revocations stay in this process."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from tether.revocation import AUTH_REVOKED, followed_connections
from tether.revocation.following import finish_following, follow, start_following
from tether.revocation.registry import revoke_here, session_tag


class Session:
    def __init__(self, key: str | None) -> None:
        self.session_key = key


async def receive() -> dict[str, Any]:
    return {"type": "websocket.connect"}


async def started(session_key: str | None = "k" * 32) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    """A followed scope, what the server was sent, and the send the application gets."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "websocket", "session": Session(session_key)}
    _, app_send, is_new = await start_following(scope, receive, send)
    assert is_new
    return scope, sent, app_send


async def settle(scope: dict[str, Any]) -> None:
    await finish_following(scope)  # awaits the close in flight
    assert followed_connections() == 0


async def test_a_user_revoked_while_the_connection_was_being_looked_up_is_closed_when_bound():
    scope, sent, _ = await started()
    revoke_here(None, "7", "password_changed")  # the user is not known yet: the connection notes it
    follow(scope, User(pk=7, username="alice"), "k" * 32)
    await settle(scope)
    assert sent == [{"type": "websocket.close", "code": AUTH_REVOKED, "reason": "login ended: password_changed"}]


async def test_another_users_revocation_during_the_lookup_does_not_count():
    scope, sent, _ = await started()
    revoke_here(None, "8", "password_changed")
    follow(scope, User(pk=7, username="alice"), "k" * 32)
    assert followed_connections() == 1
    await settle(scope)
    assert sent == []


async def test_a_session_ended_during_the_lookup_closes_the_connection():
    scope, sent, _ = await started()
    revoke_here(session_tag("k" * 32), None, "logout")
    follow(scope, User(pk=7, username="alice"), "k" * 32)  # too late: nothing to follow any more
    await settle(scope)
    assert [message["code"] for message in sent] == [AUTH_REVOKED]


async def test_what_the_application_sends_after_the_close_is_dropped():
    scope, sent, app_send = await started()
    follow(scope, User(pk=7, username="alice"), "k" * 32)
    await app_send({"type": "websocket.accept"})
    revoke_here(None, "7", "inactive")
    await app_send({"type": "websocket.send", "text": "private"})
    await app_send({"type": "websocket.close", "code": 1000})
    await settle(scope)
    assert [message["type"] for message in sent] == ["websocket.accept", "websocket.close"]
    assert sent[-1]["code"] == AUTH_REVOKED


@pytest.mark.parametrize("user", [None, "anonymous"])
async def test_an_anonymous_connection_is_not_followed(user):
    from django.contrib.auth.models import AnonymousUser

    scope, _, _ = await started()
    follow(scope, AnonymousUser() if user else None, "k" * 32)
    assert followed_connections() == 0
    await settle(scope)


async def test_a_long_reason_is_cut_to_what_a_close_frame_carries():
    scope, sent, _ = await started()
    follow(scope, User(pk=7, username="alice"), "k" * 32)
    revoke_here(None, "7", "é" * 200)
    await settle(scope)
    assert len(sent[0]["reason"].encode()) <= 123
    assert sent[0]["reason"].startswith("login ended: éé")


def test_a_reason_must_be_a_string():
    from tether.revocation import revoke_user

    with pytest.raises(TypeError, match="non-empty str"):
        revoke_user(7, reason=None)  # type: ignore[arg-type]


async def test_a_tokens_session_revoked_while_the_token_was_checked_closes_the_connection():
    """A token names its session only once checked: a logout meanwhile is noted, and counts when it is bound."""
    scope, sent, _ = await started(session_key=None)  # no session cookie: the token's session is not known yet
    revoke_here(session_tag("t" * 32), None, "logout")
    follow(scope, User(pk=7, username="alice"), "t" * 32)
    await settle(scope)
    assert sent == [{"type": "websocket.close", "code": AUTH_REVOKED, "reason": "login ended: logout"}]
