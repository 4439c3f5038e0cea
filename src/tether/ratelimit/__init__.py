"""Rate limits on handshakes and client messages: token buckets in this process or in Redis (docs/limits.md).

``TETHER_RATE_LIMITS`` sets the project's limits (``connect_per_ip``, ``connect_per_user``,
``messages_per_connection``, ``messages_per_user``) and where buckets live; a WebSocket consumer's ``rate_limits``
overrides them. A handshake over a limit gets HTTP 429 with ``Retry-After``; a message over a limit is not handed to
``receive()``: a JSON consumer answers with an error event, and any consumer closes with 4429 when the client keeps
sending. ``take()`` applies a limit of your own; ``counters()`` reads the refusals for metrics.
"""

from __future__ import annotations

from tether.ratelimit.config import LIMITS, rate_limit_settings
from tether.ratelimit.limiter import (
    HTTP_TOO_MANY_REQUESTS,
    RATE_LIMITED,
    Refusal,
    client_ip,
    counters,
    get_store,
    reset_counters,
    take,
)
from tether.ratelimit.rates import Rate, parse_rate
from tether.ratelimit.stores import MemoryStore, RedisStore

__all__ = [
    "HTTP_TOO_MANY_REQUESTS",
    "LIMITS",
    "RATE_LIMITED",
    "MemoryStore",
    "Rate",
    "RedisStore",
    "Refusal",
    "client_ip",
    "counters",
    "get_store",
    "parse_rate",
    "rate_limit_settings",
    "reset_counters",
    "take",
]
