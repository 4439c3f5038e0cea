"""Session expiry: each followed connection's timer fires at its session's stored expiry date.

The dates of the sessions of newly followed connections are read together (``ExpiryReader``, one query per loop and
quarter second); a timer that fires reads the session again, since activity elsewhere may have extended it, and
re-arms or revokes.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import weakref
from typing import TYPE_CHECKING

from django.utils import timezone

from tether.db import database_sync_to_async
from tether.revocation.registry import Watch, registry

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

__all__ = ["EXPIRY_READ_DELAY", "arm_expiry", "expiry_reader"]

logger = logging.getLogger("tether.revocation")

#: How long a new connection's session waits to have its expiry date read with the others' (seconds).
EXPIRY_READ_DELAY = 0.25
#: A session whose expiry check finds it still alive is checked again no sooner than this (seconds).
_MIN_RECHECK = 1.0


def _session_store_class() -> type[SessionBase]:
    """The ``SessionStore`` of ``SESSION_ENGINE``, as the session middleware builds it."""
    from tether.sessions import _session_store_class

    return _session_store_class()


def _stored_expiries(session_keys: list[str]) -> dict[str, datetime.datetime | None]:
    """When each stored session of ``session_keys`` expires (database thread); a key that is missing from the answer
    names a session that is gone, None one whose expiry cannot be told.

    Engines backed by a model (``db``, ``cached_db``) know it exactly, all keys in one query. Others are asked each
    session's ``get_expiry_date()``, exact for a session with an explicit ``set_expiry()`` and otherwise counted from
    now, which is later than the truth; the expiry check reads the session again when the timer fires.
    """
    store_class = _session_store_class()
    model_class = getattr(store_class, "get_model_class", None)
    if model_class is not None:
        rows = model_class().objects.filter(session_key__in=session_keys).values_list("session_key", "expire_date")
        return dict(rows)
    expiries: dict[str, datetime.datetime | None] = {}
    for session_key in session_keys:
        try:
            store = store_class(session_key)
            store.load()
            expiries[session_key] = store.get_expiry_date()
        except Exception:
            logger.debug("Could not read the expiry of a session.", exc_info=True)
            expiries[session_key] = None
    return expiries


class _ExpiryReader:
    """Reads the expiry dates of the sessions of one loop's newly followed connections, together.

    A connection waits up to ``EXPIRY_READ_DELAY`` for its timer to be armed, and a burst of connections costs one
    query instead of one each on the handshake's path (a primary-key query and a database thread hop are about
    0.5 ms on SQLite). One timer handle and at most one task per loop, owned here.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[str, list[Watch]] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def add(self, watch: Watch, session_key: str) -> None:
        """Queue ``watch`` for the next read of ``session_key``; the first one queued sets the timer."""
        self.waiting.setdefault(session_key, []).append(watch)
        if self.handle is None and self.task is None:
            self.handle = self.loop.call_later(EXPIRY_READ_DELAY, self.start)

    def start(self) -> None:
        """The timer fired: read what is queued, in one task; what is queued meanwhile waits for the next read."""
        self.handle = None
        batch, self.waiting = self.waiting, {}
        self.task = self.loop.create_task(self.read(batch))

    async def read(self, batch: dict[str, list[Watch]]) -> None:
        """Read the expiry dates of ``batch`` and arm its connections' timers (or revoke, for a session gone)."""
        try:
            expiries = await database_sync_to_async(_stored_expiries)(list(batch))
        except Exception:
            logger.exception(
                "Could not read when %d sessions expire; their sockets do not close at expiry.", len(batch)
            )
            return
        finally:
            self.task = None
            if self.waiting and self.handle is None:
                self.handle = self.loop.call_later(EXPIRY_READ_DELAY, self.start)
        for session_key, watches in batch.items():
            for watch in watches:
                if watch.closing or watch.session_key != session_key or not registry.has(watch):
                    continue  # gone, or following another login since
                if session_key not in expiries:
                    watch.revoke("session_ended")  # deleted between the handshake and now
                elif (expiry := expiries[session_key]) is not None:
                    arm_expiry(watch, session_key, expiry)


_expiry_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ExpiryReader] = weakref.WeakKeyDictionary()


def expiry_reader(loop: asyncio.AbstractEventLoop) -> _ExpiryReader:
    """The expiry reader of ``loop``, made at its first followed session."""
    reader = _expiry_readers.get(loop)
    if reader is None:
        reader = _expiry_readers[loop] = _ExpiryReader(loop)
    return reader


def _session_still_open(session_key: str, user: str) -> datetime.datetime | None:
    """The new expiry of session ``session_key`` when it still logs ``user`` in, else None (database thread)."""
    from django.contrib.auth import SESSION_KEY

    store = _session_store_class()(session_key)
    if store.get(SESSION_KEY) != user:
        return None
    expiry = _stored_expiries([session_key]).get(session_key)
    if expiry is None or expiry <= timezone.now():
        return None
    return expiry


def arm_expiry(watch: Watch, session_key: str, expiry: datetime.datetime) -> None:
    """Arm (or re-arm) ``watch``'s timer for ``expiry``, a wall-clock date turned into the loop's monotonic time."""
    if watch.expiry is not None:
        watch.expiry.cancel()
    delay = max((expiry - timezone.now()).total_seconds(), 0.0)
    watch.expiry = watch.loop.call_at(watch.loop.time() + delay, _expiry_due, watch, session_key)


def _expiry_due(watch: Watch, session_key: str) -> None:
    """The timer fired (in the loop): start the check, unless one runs already or the connection is closing."""
    watch.expiry = None
    if not watch.closing and watch.check is None:
        watch.check = watch.loop.create_task(_check_expiry(watch, session_key))


async def _check_expiry(watch: Watch, session_key: str) -> None:
    """The session's expiry date came: read it again (activity elsewhere may have extended it), re-arm or revoke."""
    try:
        if watch.user is None:
            return
        expiry = await database_sync_to_async(_session_still_open)(session_key, watch.user)
    finally:
        watch.check = None
    if expiry is None:
        watch.revoke("session_expired")
    else:
        later = max(expiry, timezone.now() + datetime.timedelta(seconds=_MIN_RECHECK))
        arm_expiry(watch, session_key, later)
