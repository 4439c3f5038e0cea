"""Applying the limits: a handshake admitted or refused with 429, a client message admitted or refused, counted and
logged.

The consumers call ``admit_connection`` (or ``admit_connection_sync``) as a handshake arrives, before ``connect()``;
when the class limits messages, it leaves a ``MessageGate`` on the consumer, which ``websocket_receive`` asks about
each message. A consumer without limits gets no gate: its per-message cost is one attribute check.

A store that fails (Redis unreachable for ``stores.REDIS_WAIT`` seconds) lets the action through, counts a
``store_errors`` and logs one warning per outage: a limiter must not turn a Redis outage into a WebSocket outage.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.core.signals import setting_changed

from tether.ratelimit.config import SETTING, ConsumerLimits, limits_for, rate_limit_settings
from tether.ratelimit.rates import Rate, TokenBucket, parse_rate
from tether.ratelimit.stores import MemoryStore, RedisStore, Store
from tether.types import Scope
from tether.utils import name_that_thing

__all__ = [
    "HTTP_TOO_MANY_REQUESTS",
    "RATE_LIMITED",
    "MessageGate",
    "Refusal",
    "admit_connection",
    "admit_connection_sync",
    "client_ip",
    "counters",
    "get_store",
    "reset_counters",
    "take",
]

logger = logging.getLogger("tether.ratelimit")

#: The close code of a connection whose client kept sending over a message limit (as 4401 mirrors HTTP 401).
RATE_LIMITED = 4429
#: The HTTP status of a handshake over a connection limit.
HTTP_TOO_MANY_REQUESTS = 429

#: The clock of the in-memory buckets and of each connection's own bucket (monotonic seconds); tests replace it.
clock: Callable[[], float] = time.monotonic


def _now() -> float:
    return clock()


@dataclass(frozen=True)
class Refusal:
    """An action refused by ``limit``: ``retry_after`` seconds until the bucket has a token again, and (for
    messages) how many of the connection's messages were refused ``in_a_row``, this one included."""

    limit: str
    retry_after: float
    in_a_row: int = 1

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` rounded up to whole seconds, at least 1: the ``Retry-After`` header's value."""
        return max(1, math.ceil(self.retry_after))

    def http_body(self) -> str:
        """The JSON body of a refused handshake: ``{"error": "rate_limited", "limit", "retry_after"}``."""
        return json.dumps({"error": "rate_limited", "limit": self.limit, "retry_after": self.retry_after_seconds})

    def http_headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after_seconds)), ("content-type", "application/json")]

    def event(self) -> dict[str, Any]:
        """The error event a JSON consumer sends for a refused message (docs/limits.md#rate-limits)."""
        return {
            "type": "error",
            "code": "rate_limited",
            "limit": self.limit,
            "retry_after": round(self.retry_after, 3),
            "message": f"Too many messages: wait {self.retry_after_seconds} s before sending again.",
        }

    @property
    def close_reason(self) -> str:
        return f"Rate limit exceeded: {self.limit}"


# Counters, per process: refusals per limit (or per bucket name given to ``take``) and store errors.
_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


def _count(name: str) -> None:
    with _counts_lock:
        _counts[name] += 1


def counters() -> dict[str, int]:
    """This process's refusals so far, by limit name (``"connect_per_ip"``, ...; a ``take`` bucket by its name), and
    ``"store_errors"``: the takes let through because the store failed. A copy, for metrics exporters."""
    with _counts_lock:
        return dict(_counts)


def reset_counters() -> None:
    """Start the counters again from zero (tests, or an exporter that reports deltas)."""
    with _counts_lock:
        _counts.clear()


_store: Store | None = None
_store_failing = False


def get_store() -> Store:
    """The process's bucket store, built from ``TETHER_RATE_LIMITS["store"]`` on first use."""
    global _store
    if _store is None:
        config = rate_limit_settings()
        memory = config.store == "memory"
        _store = MemoryStore(clock=_now) if memory else RedisStore(config.store, config.prefix)
    return _store


def _forget_store(*, setting: str, **kwargs: Any) -> None:
    global _store
    if setting == SETTING:
        _store = None


setting_changed.connect(_forget_store)


def _failed(error: Exception) -> tuple[float, bool]:
    global _store_failing
    _count("store_errors")
    if not _store_failing:
        _store_failing = True
        logger.warning("The rate limit store failed (%s); actions are let through until it answers again.", error)
    return 0.0, False


def _recovered() -> None:
    global _store_failing
    if _store_failing:
        _store_failing = False
        logger.warning("The rate limit store answers again; limits apply.")


async def _take(store: Store, key: str, rate: Rate) -> tuple[float, bool]:
    try:
        taken = await store.take(key, rate)
    except Exception as error:
        return _failed(error)
    _recovered()
    return taken


def _take_sync(store: Store, key: str, rate: Rate) -> tuple[float, bool]:
    if isinstance(store, MemoryStore):
        return store.take_now(key, rate)
    return async_to_sync(_take)(store, key, rate)


def client_ip(scope: Scope, trusted_proxies: int = 0) -> str | None:
    """The client's address as the limits key it: ``scope["client"]``, or ``X-Forwarded-For`` behind proxies.

    With ``trusted_proxies`` = N above 0, the address is the N-th entry from the right of ``X-Forwarded-For`` (each
    trusted proxy appends the address it saw; entries further left are whatever the client wrote), or the leftmost
    when there are fewer; an entry that is not an IP address is ignored. An IPv6 address stands for its /64
    network, which one client usually holds whole. ``None`` when the server gives no client (a unix socket without a
    trusted proxy): then no per-address limit applies.
    """
    address: str | None = None
    if trusted_proxies:
        forwarded = [
            entry.strip()
            for name, value in scope.get("headers") or ()
            if bytes(name).lower() == b"x-forwarded-for"
            for entry in bytes(value).decode("latin-1").split(",")
            if entry.strip()
        ]
        if forwarded:
            address = forwarded[-min(trusted_proxies, len(forwarded))]
            if not _is_ip(address):  # not written by a proxy: no bucket of the client's choosing
                address = None
    if address is None:
        client = scope.get("client")
        address = str(client[0]) if client else None
    if not address:
        return None
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _user_key(scope: Scope) -> str | None:
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


def _key(limits: ConsumerLimits, name: str, subject: str) -> str:
    return f"{limits.namespaces[name]}:{name}:{subject}"


def _connect_subjects(scope: Scope, limits: ConsumerLimits) -> list[tuple[str, str]]:
    """(limit name, subject) for each connection limit that applies: no address, or no login, no limit."""
    found: list[tuple[str, str]] = []
    if "connect_per_ip" in limits.rates:
        address = client_ip(scope, rate_limit_settings().trusted_proxies)
        if address is not None:
            found.append(("connect_per_ip", address))
    if "connect_per_user" in limits.rates:
        user = _user_key(scope)
        if user is not None:
            found.append(("connect_per_user", user))
    return found


def _refuse_handshake(consumer: Any, name: str, subject: str, wait: float, first: bool) -> Refusal:
    _count(name)
    if first:
        logger.warning(
            "%s: handshakes from %s are over %s; refused with %d, retry after %.1f s.",
            name_that_thing(consumer),
            f"user {subject}" if name == "connect_per_user" else subject,
            name,
            HTTP_TOO_MANY_REQUESTS,
            wait,
        )
    return Refusal(name, wait)


async def admit_connection(consumer: Any) -> Refusal | None:
    """Take the handshake's tokens of the consumer's connection limits; the ``Refusal`` of the first that has none.

    On admission a consumer whose class limits messages gets its ``MessageGate``. Buckets checked before the refusing
    one keep the token they gave (the handshake was attempted).
    """
    limits = limits_for(type(consumer))
    if limits is None:
        return None
    if limits.connects:
        store = get_store()
        for name, subject in _connect_subjects(consumer.scope, limits):
            wait, first = await _take(store, _key(limits, name, subject), limits.rates[name])
            if wait:
                return _refuse_handshake(consumer, name, subject, wait, first)
    if limits.messages:
        consumer._message_gate = MessageGate(consumer, limits)
    return None


def admit_connection_sync(consumer: Any) -> Refusal | None:
    """``admit_connection`` for sync consumers, from their handler thread: a consumer without limits returns at
    once, one with limits pays a hop to the event loop per handshake (not per message)."""
    if limits_for(type(consumer)) is None:
        return None
    return async_to_sync(admit_connection)(consumer)


class MessageGate:
    """One connection's message limits: its own bucket (always in this process: a connection lives in one) and its
    user's key in the store. Counts refusals in a row, and logs the first refusal of each limit once."""

    __slots__ = ("in_a_row", "logged", "own", "owner", "per_user")

    def __init__(self, consumer: Any, limits: ConsumerLimits) -> None:
        self.owner = type(consumer)  # for log lines (the class: the gate must not keep its consumer alive)
        rate = limits.rates.get("messages_per_connection")
        self.own = (TokenBucket(rate, clock()), rate) if rate is not None else None
        user = _user_key(consumer.scope) if "messages_per_user" in limits.rates else None
        # (the user, the store key, the rate); guests have no user bucket
        self.per_user = (
            (user, _key(limits, "messages_per_user", user), limits.rates["messages_per_user"])
            if user is not None
            else None
        )
        self.in_a_row = 0
        self.logged: set[str] = set()

    def _own_refusal(self) -> Refusal | None:
        if self.own is None:
            return None
        bucket, rate = self.own
        wait = bucket.take(rate, clock())
        return self._refused("messages_per_connection", wait, rate, "") if wait else None

    def _refused(self, name: str, wait: float, rate: Rate, whose: str) -> Refusal:
        self.in_a_row += 1
        _count(name)
        if name not in self.logged:
            self.logged.add(name)
            logger.warning(
                "%s: client messages over %s (%s) are refused%s.", name_that_thing(self.owner), name, rate, whose
            )
        return Refusal(name, wait, self.in_a_row)

    async def take(self) -> Refusal | None:
        """Admit one client message (``None``) or refuse it; a refused message takes no token of the other limit."""
        refusal = self._own_refusal()
        if refusal is not None:
            return refusal
        if self.per_user is not None:
            user, key, rate = self.per_user
            wait, _ = await _take(get_store(), key, rate)
            if wait:
                return self._refused("messages_per_user", wait, rate, f" for user {user}")
        self.in_a_row = 0
        return None

    def take_sync(self) -> Refusal | None:
        """``take`` for sync consumers, from their handler thread."""
        refusal = self._own_refusal()
        if refusal is not None:
            return refusal
        if self.per_user is not None:
            user, key, rate = self.per_user
            wait, _ = _take_sync(get_store(), key, rate)
            if wait:
                return self._refused("messages_per_user", wait, rate, f" for user {user}")
        self.in_a_row = 0
        return None


async def take(bucket: str, subject: object, rate: Rate | str) -> float:
    """Take a token from the bucket ``bucket`` of ``subject`` (a user's pk, a room, an address): ``0.0`` when
    allowed, else the seconds to wait. For limits of your own, in the same store as tether's (memory or Redis).

    ``rate`` is a ``Rate`` or a string such as ``"5/10s"``; a refusal is counted under ``bucket`` in ``counters()``
    and logged once until the subject is allowed again. Raises ``ValueError`` for a rate that cannot be read.
    """
    parsed = parse_rate(rate)
    key = f"take:{bucket}:{subject}"
    wait, first = await _take(get_store(), key, parsed)
    if wait:
        _count(bucket)
        if first:
            logger.warning("%s: %s is over its limit of %s; retry after %.1f s.", bucket, subject, parsed, wait)
    return wait
