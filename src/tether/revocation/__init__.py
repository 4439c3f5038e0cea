"""Sockets follow the login (tether-only): a logout, password change, deactivation or ended session closes them.

A WebSocket authenticated by a session (``AuthMiddleware``) or by a token (``TokenAuthMiddleware``) is *followed*:
the connection is entered in a per-process registry under a keyed hash of its session key and under its user's
primary key for as long as it is open. When the login ends, every followed connection of that session (logout,
flushed or deleted session, expiry) or of that user (password change, deactivation, deletion) is closed with
``AUTH_REVOKED`` (4401), or, for a consumer that called ``carry_on_anonymous(self)``, carries on with
``scope["user"]`` set to ``AnonymousUser`` and receives an ``auth.revoked`` message.

Other processes hear of a revocation through the channel layer: each event loop that holds followed connections
runs one listener task with one channel in the group ``REVOCATION_GROUP``, and ``revoke_session``/``revoke_user``
(called by the signal receivers of ``tether.revocation.signals``) ``group_send`` one message to it. A revocation
always closes the matching connections of the calling process directly, so one process without a shared layer still
works. Raw session keys never travel: only ``salted_hmac`` digests of them do.

Cost per followed connection (``benchmarks/revocation_cost.py``): about 870 bytes (a record with ``__slots__``, two
index entries, one ``loop.call_at`` handle for the expiry) and about 10 us to register; no task, no channel. Per
process: one listener task and one channel per event loop, one group membership.

The parts: ``registry`` (the followed connections and what revoking one does), ``following`` (what the middlewares
call), ``listener`` (the channel layer side), ``expiry`` (session expiry timers), ``publish`` (``revoke_session`` /
``revoke_user``), ``signals`` (what counts as the end of a login), ``config`` (the settings).

The setting ``TETHER_FOLLOW_LOGIN`` (default True) turns it off; ``TETHER_FOLLOW_LOGIN_LAYER`` (default
``"default"``) names the channel layer that carries revocations.
"""

from __future__ import annotations

from tether.revocation.following import carry_on_anonymous
from tether.revocation.listener import REVOCATION_GROUP
from tether.revocation.publish import arevoke_session, arevoke_user, revoke_session, revoke_user
from tether.revocation.registry import AUTH_REVOKED, REVOKED_MESSAGE_TYPE, registry

__all__ = [
    "AUTH_REVOKED",
    "REVOCATION_GROUP",
    "REVOKED_MESSAGE_TYPE",
    "arevoke_session",
    "arevoke_user",
    "carry_on_anonymous",
    "followed_connections",
    "revoke_session",
    "revoke_user",
]


def followed_connections() -> int:
    """How many connections of this process are followed right now (for metrics and tests)."""
    return registry.count()
