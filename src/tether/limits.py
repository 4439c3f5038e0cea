"""Limits on one connection: the largest message, the deepest JSON nesting, the keepalive, handshake and drain times,
and how many outgoing messages may wait for a slow client (and what happens then).

Plain functions without I/O, shared by the server helper (which hands the message size limit to uvicorn, so a frame
over it is refused before it is buffered whole, and the ping and handshake times) and by the WebSocket consumers
(which enforce a lower size limit of their own and refuse deep JSON before decoding it). docs/limits.md is the user's
view of the same numbers.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_DRAIN_WINDOW",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_OUTBOUND_QUEUE_SIZE",
    "DEFAULT_SLOW_CLIENT_POLICY",
    "DEFAULT_WS_PING_INTERVAL",
    "DEFAULT_WS_PING_TIMEOUT",
    "INVALID_PAYLOAD",
    "MESSAGE_TOO_BIG",
    "SLOW_CLIENT",
    "SLOW_CLIENT_POLICIES",
    "check_slow_client_policy",
    "drain_timeout",
    "drain_window",
    "handshake_timeout",
    "json_nesting_exceeds",
    "max_message_size",
    "message_size",
    "outbound_queue_size",
    "seconds_setting",
    "slow_client_policy",
    "ws_compression",
    "ws_ping_interval",
    "ws_ping_timeout",
]

#: The largest incoming WebSocket message, in bytes, unless ``TETHER_MAX_MESSAGE_SIZE`` says otherwise: room for any
#: chat line or dashboard update, and small enough that a few thousand idle clients cannot pin gigabytes (uvicorn's
#: own default is 16 MiB, and the last message of an idle connection stays in memory inside its frame parser).
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

#: How deeply JSON consumers let arrays and objects nest. Real documents stay under ten levels; Python's decoder
#: recurses per level, so without a limit a frame of a few thousand ``[`` raises ``RecursionError``.
DEFAULT_MAX_JSON_DEPTH = 64

#: Seconds between keepalive pings on an idle WebSocket (``TETHER_WS_PING_INTERVAL``), uvicorn's default: below the
#: 60 s idle timeout of nginx and most load balancers, so a quiet connection is never cut by a proxy.
DEFAULT_WS_PING_INTERVAL = 20.0
#: Seconds a ping waits for its pong before the connection is closed as dead (``TETHER_WS_PING_TIMEOUT``).
DEFAULT_WS_PING_TIMEOUT = 20.0
#: Seconds from the TCP connection to a complete handshake (``TETHER_HANDSHAKE_TIMEOUT``): the request headers read
#: and, for a WebSocket, the application's accept or refusal. Clients on slow mobile links need well under a second.
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
#: Seconds over which a stopping server closes its WebSockets with 1012, a batch at a time (``TETHER_DRAIN_WINDOW``):
#: 10,000 clients closed in one instant all come back in the same second, to the processes that are left.
DEFAULT_DRAIN_WINDOW = 10.0
#: Seconds from the stop signal after which connections still open are closed by the server, cancelling the handlers
#: still running (``TETHER_DRAIN_TIMEOUT``). Below Kubernetes' default grace period of 30 s, which ends in SIGKILL.
DEFAULT_DRAIN_TIMEOUT = 20.0

#: How many outgoing messages may wait for a client that reads slower than it is sent to
#: (``TETHER_OUTBOUND_QUEUE_SIZE``). They wait behind what the server and the kernel buffer already (about 4 MB on
#: Linux before uvicorn pushes back), so this is a burst allowance, not the whole backlog: 256 dashboard updates at
#: 10 a second are 25 seconds of a stalled client, and 256 KiB of memory for 1 KiB messages.
DEFAULT_OUTBOUND_QUEUE_SIZE = 256
#: What happens when a slow client's queue is full (``TETHER_SLOW_CLIENT_POLICY``): close the connection with
#: ``SLOW_CLIENT``. Dropping messages silently is a choice a consumer makes (``slow_client_policy``), not a default.
DEFAULT_SLOW_CLIENT_POLICY = "disconnect"
#: The policies a consumer may choose for a slow client (docs/limits.md, "Slow clients").
SLOW_CLIENT_POLICIES = ("disconnect", "drop_oldest", "conflate")
#: Application close code for a client closed because it read too slowly: 4000-4999 are the application's
#: (RFC 6455 7.4.2), and 4008 echoes HTTP 408. Not 1013 ("try again later"), which blames the server, nor 1008
#: (policy violation), which clients take as final: a slow client should reconnect after a jittered delay and
#: fetch the state it missed, which is what tether.js does for any code but 1000.
SLOW_CLIENT = 4008

#: RFC 6455 close code for a message larger than the endpoint accepts.
MESSAGE_TOO_BIG = 1009
#: RFC 6455 close code for a message inconsistent with its type (undecodable or over-nested JSON).
INVALID_PAYLOAD = 1007

_SETTING = "TETHER_MAX_MESSAGE_SIZE"

#: A JSON string literal, escapes included: written as "unrolled loop" so the regex engine never backtracks.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Everything that is not a bracket, removed before the depth is counted.
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}

#: The setting's checked value, read once: every received message is measured against it, and reading a setting the
#: project does not define costs about 2 µs in Django's lazy settings (a third of a whole echo). Tests that change
#: the setting (``override_settings``) send ``setting_changed``, which clears it. The WebSocket consumers' receive path
#: reads it directly (a call per message is measurable there), falling back to ``max_message_size()`` while unset.
cached_max_message_size: int | None = None


def max_message_size() -> int:
    """The project's largest incoming message in bytes: ``TETHER_MAX_MESSAGE_SIZE``, 1 MiB when unset.

    Raises ``ImproperlyConfigured`` naming the setting when it is not a positive whole number.
    """
    global cached_max_message_size
    if cached_max_message_size is not None:
        return cached_max_message_size
    value: Any = getattr(settings, _SETTING, DEFAULT_MAX_MESSAGE_SIZE)
    if type(value) is not int or value <= 0:
        raise ImproperlyConfigured(
            f"{_SETTING} must be a positive number of bytes, such as {DEFAULT_MAX_MESSAGE_SIZE} (1 MiB, the "
            f"default), not {value!r}."
        )
    cached_max_message_size = value
    return value


def seconds_setting(name: str, default: float) -> float:
    """The setting ``name``, a positive number of seconds (``default`` when unset); ``ImproperlyConfigured`` naming it
    and its default otherwise. Every tether setting that is a time is read through here."""
    value: Any = getattr(settings, name, default)
    if type(value) not in (int, float) or not 0 < value < float("inf"):
        raise ImproperlyConfigured(
            f"{name} must be a positive number of seconds, not {value!r}; remove it for the default of {default}."
        )
    return float(value)


def ws_ping_interval() -> float:
    """Seconds between keepalive pings: ``TETHER_WS_PING_INTERVAL``, 20 when unset; ``ImproperlyConfigured`` if bad."""
    return seconds_setting("TETHER_WS_PING_INTERVAL", DEFAULT_WS_PING_INTERVAL)


def ws_compression() -> bool:
    """Whether the server offers permessage-deflate to clients that ask (browsers do): ``TETHER_WS_COMPRESSION``,
    ``True`` when unset. Each compressing connection keeps a compressor and a decompressor, about 42 KB of memory on
    uvicorn, idle or not; ``False`` suits many idle connections with small messages (docs/deploying.md)."""
    value: Any = getattr(settings, "TETHER_WS_COMPRESSION", True)
    if type(value) is not bool:
        raise ImproperlyConfigured(f"TETHER_WS_COMPRESSION must be True or False, not {value!r}.")
    return value


def ws_ping_timeout() -> float:
    """Seconds a ping waits for its pong: ``TETHER_WS_PING_TIMEOUT``, 20 when unset; ``ImproperlyConfigured`` if bad."""
    return seconds_setting("TETHER_WS_PING_TIMEOUT", DEFAULT_WS_PING_TIMEOUT)


def handshake_timeout() -> float:
    """Seconds to complete a handshake: ``TETHER_HANDSHAKE_TIMEOUT``, 5 when unset; ``ImproperlyConfigured`` if bad."""
    return seconds_setting("TETHER_HANDSHAKE_TIMEOUT", DEFAULT_HANDSHAKE_TIMEOUT)


def drain_window() -> float:
    """Seconds over which a stopping server closes its WebSockets: ``TETHER_DRAIN_WINDOW``, 10 when unset.

    0 closes them all at once. Raises ``ImproperlyConfigured`` naming the setting when it is not a number of seconds.
    """
    value: Any = getattr(settings, "TETHER_DRAIN_WINDOW", DEFAULT_DRAIN_WINDOW)
    if type(value) not in (int, float) or not 0 <= value < float("inf"):
        raise ImproperlyConfigured(
            f"TETHER_DRAIN_WINDOW must be a number of seconds of at least 0, such as {DEFAULT_DRAIN_WINDOW}, "
            f"not {value!r}."
        )
    return float(value)


def drain_timeout() -> float:
    """Seconds from the stop signal to the forced close of what is still open: ``TETHER_DRAIN_TIMEOUT``, 20 when unset.

    Raises ``ImproperlyConfigured`` when it is not a positive number of seconds, or is shorter than the window (the
    last batch would be cut short).
    """
    timeout = seconds_setting("TETHER_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT)
    window = drain_window()
    if timeout < window:
        raise ImproperlyConfigured(
            f"TETHER_DRAIN_TIMEOUT ({timeout:g} s) is shorter than TETHER_DRAIN_WINDOW ({window:g} s): the last "
            "connections would be cut off before their turn. Make the timeout at least the window, with room for "
            "the handlers to finish."
        )
    return timeout


def outbound_queue_size() -> int:
    """How many outgoing messages may wait for a slow client: ``TETHER_OUTBOUND_QUEUE_SIZE``, 256 when unset.

    Read when a client first falls behind, not per message. Raises ``ImproperlyConfigured`` naming the setting when
    it is not a positive whole number.
    """
    value: Any = getattr(settings, "TETHER_OUTBOUND_QUEUE_SIZE", DEFAULT_OUTBOUND_QUEUE_SIZE)
    if type(value) is not int or value <= 0:
        raise ImproperlyConfigured(
            f"TETHER_OUTBOUND_QUEUE_SIZE must be a positive number of messages, such as "
            f"{DEFAULT_OUTBOUND_QUEUE_SIZE} (the default), not {value!r}."
        )
    return value


def check_slow_client_policy(value: Any, where: str) -> str:
    """Return ``value`` if it names a slow-client policy; otherwise raise ``ValueError`` saying where to fix it."""
    if value not in SLOW_CLIENT_POLICIES:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, SLOW_CLIENT_POLICIES))}, not {value!r}.")
    return value  # type: ignore[no-any-return]


def slow_client_policy() -> str:
    """The project's policy for slow clients: ``TETHER_SLOW_CLIENT_POLICY``, ``"disconnect"`` when unset.

    Raises ``ImproperlyConfigured`` naming the setting when it is not one of ``SLOW_CLIENT_POLICIES``.
    """
    value: Any = getattr(settings, "TETHER_SLOW_CLIENT_POLICY", DEFAULT_SLOW_CLIENT_POLICY)
    try:
        return check_slow_client_policy(value, "TETHER_SLOW_CLIENT_POLICY")
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def _forget_max_message_size(*, setting: str, **kwargs: Any) -> None:
    global cached_max_message_size
    if setting == _SETTING:
        cached_max_message_size = None


setting_changed.connect(_forget_max_message_size)


def message_size(text: str | None, data: bytes | None, at_least: int) -> int:
    """The size in bytes of a received message, exactly when it may exceed ``at_least`` and cheaply otherwise.

    A text message is counted in UTF-8 bytes, as on the wire; the encoding is only paid for a string long enough to
    matter (a character is at most four bytes), and an ASCII string's length is its size.
    """
    if text is None:
        return len(data) if data is not None else 0
    length = len(text)
    if length * 4 <= at_least or text.isascii():
        return length
    return len(text.encode("utf-8", "surrogatepass"))


def json_nesting_exceeds(text: str, limit: int) -> bool:
    """Tell whether the JSON ``text`` nests arrays and objects more than ``limit`` levels deep, without decoding it.

    Cheap for ordinary frames: a text with no more than ``limit`` opening brackets cannot be that deep, which two
    ``str.count`` calls settle. Otherwise string literals (whose brackets do not count) are removed and the running
    depth of the remaining brackets is computed in C (``itertools.accumulate``). Malformed text is not judged here:
    the decoder refuses it afterwards.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit
