"""What following a login costs per WebSocket (docs/sessions-and-auth.md, "What it costs"): memory and time.

``python benchmarks/revocation_cost.py`` registers 10,000 followed connections the way ``AuthMiddleware`` does
(``start_following``, then ``follow``, which binds the user and queues the session for the expiry reader), lets the
reader arm their timers, and measures the memory they hold with ``tracemalloc`` and the time per connection to
register and to forget them. No server, database or Redis: the expiry dates the reader fetches (one query for all the
sessions that connected in the same quarter second) are answered in place, without the database thread.
"""

from __future__ import annotations

import asyncio
import datetime
import statistics
import time
import tracemalloc
from typing import Any

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="benchmark-not-secret",
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "tether"],
    DATABASES={},
    USE_TZ=True,
)
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.utils import timezone  # noqa: E402

from tether.revocation import expiry as expiry_module  # noqa: E402
from tether.revocation import followed_connections, following  # noqa: E402

CONNECTIONS = 10_000


class FakeSession:
    def __init__(self, key: str) -> None:
        self.session_key = key


async def noop_receive() -> dict[str, Any]:
    return {"type": "websocket.connect"}


async def noop_send(message: dict[str, Any]) -> None:
    return None


def scopes() -> list[dict[str, Any]]:
    return [{"type": "websocket", "session": FakeSession(f"sessionkey{n:022d}")} for n in range(CONNECTIONS)]


def in_place(function: Any) -> Any:
    """``database_sync_to_async`` without the thread: the benchmark has no database."""

    async def call(*args: Any) -> Any:
        return function(*args)

    return call


async def register(scope: dict[str, Any], user: User) -> Any:
    """What AuthMiddleware does for one logged-in socket."""
    receive, send, _ = await following.start_following(scope, noop_receive, noop_send)
    following.follow(scope, user, scope["session"].session_key)
    return receive, send


async def main() -> None:
    users = [User(pk=n % 1000 + 1, username=f"user{n}") for n in range(CONNECTIONS)]
    expiry = timezone.now() + datetime.timedelta(days=14)
    expiry_module._stored_expiries = lambda keys: dict.fromkeys(keys, expiry)  # type: ignore[assignment]
    expiry_module.database_sync_to_async = in_place  # type: ignore[assignment]
    rounds = []
    for _ in range(3):
        # Memory, with tracemalloc on (which slows allocation down, so time is measured in a second pass).
        all_scopes = scopes()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        kept = [await register(scope, user) for scope, user in zip(all_scopes, users, strict=True)]
        await asyncio.sleep(expiry_module.EXPIRY_READ_DELAY * 4)  # the expiry reader arms the timers
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        for scope in all_scopes:
            await following.finish_following(scope)
        del kept
        # Time.
        all_scopes = scopes()
        started = time.perf_counter()
        kept = [await register(scope, user) for scope, user in zip(all_scopes, users, strict=True)]
        registered = time.perf_counter() - started
        started = time.perf_counter()
        for scope in all_scopes:
            await following.finish_following(scope)
        forgotten = time.perf_counter() - started
        assert followed_connections() == 0
        del kept
        rounds.append((held / CONNECTIONS, registered / CONNECTIONS * 1e6, forgotten / CONNECTIONS * 1e6))
    memory, register_us, forget_us = (statistics.median(column) for column in zip(*rounds, strict=True))
    print(f"{CONNECTIONS} followed connections, median of {len(rounds)} rounds:")
    print(f"  memory held per connection: {memory:.0f} bytes")
    print(f"  time to register one (start_following, follow): {register_us:.1f} us")
    print(f"  time to forget one (finish_following): {forget_us:.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
