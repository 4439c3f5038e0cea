"""A deadline on the opening of a connection, and the choice of the WebSocket implementation that sends pings.

uvicorn keeps a connection open as long as the client likes while its request headers trickle in, and a WebSocket
whose application has not yet accepted or refused it waits without limit too: 3,000 half-open upgrade requests held
for a minute were all kept open. ``with_handshake_deadline`` wraps uvicorn's HTTP protocol class so that a connection
that has not completed its handshake ``timeout`` seconds after it was opened is closed: for HTTP, when the request
headers have not all arrived; for a WebSocket, when the application has neither accepted nor refused it. A request
being handled (a slow view, a long-poll) and an established WebSocket are never touched.

Keepalive pings are uvicorn's (``ws_ping_interval`` / ``ws_ping_timeout``), but only some of its WebSocket
implementations send them: its wsproto implementation ignores both settings. ``keepalive_ws_protocol`` picks one that
pings. Both are used by ``tether.server.make_server``, and so by ``runserver`` and the live-server test case.

For uvicorn started on its own (production), ``tether.handshake:HTTPProtocol`` is uvicorn's default HTTP protocol
with the deadline of ``TETHER_HANDSHAKE_TIMEOUT``: ``uvicorn --http tether.handshake:HTTPProtocol ...``. It is built
on first use, from the settings named by ``DJANGO_SETTINGS_MODULE``.

This module reads a few attributes of uvicorn's protocol objects (``cycle``, ``handshake_complete``, the transport's
current protocol); tests/test_handshake.py checks them against the installed uvicorn.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import weakref
from typing import Any

__all__ = ["keepalive_ws_protocol", "with_handshake_deadline"]

logger = logging.getLogger("tether.handshake")

#: uvicorn's WebSocket implementations that send keepalive pings, in order of preference.
_PINGING_WS = (("websockets", "websockets-sansio"),)


def keepalive_ws_protocol(requested: Any = "auto") -> Any:
    """The ``ws`` option for uvicorn: one of its implementations that sends keepalive pings, when there is one.

    ``"auto"`` becomes ``"websockets-sansio"`` when the ``websockets`` library is installed (uvicorn's own ``auto``
    picks it too, today; naming it keeps that true). Anything else is kept; a choice that sends no pings (wsproto,
    or ``auto`` without ``websockets``) is logged as a warning, since dead peers are then never detected.
    """
    if requested == "auto":
        for library, implementation in _PINGING_WS:
            if importlib.util.find_spec(library) is not None:
                return implementation
    if requested == "auto" or requested == "wsproto":
        logger.warning(
            "uvicorn's wsproto WebSocket implementation sends no keepalive pings, so connections to clients that "
            "vanished are never closed; install websockets (pip install websockets) to use uvicorn's "
            "websockets-sansio implementation."
        )
    return requested


def _handshake_done(protocol: Any) -> bool:
    """Whether a WebSocket protocol of uvicorn has answered its handshake (accepted, refused, or denied)."""
    done = getattr(protocol, "handshake_complete", None)  # websockets-sansio, wsproto
    if isinstance(done, bool):
        return done
    event = getattr(protocol, "handshake_completed_event", None)  # the legacy websockets implementation
    if isinstance(event, asyncio.Event):
        return event.is_set()
    return True  # an implementation we cannot read: leave it alone


def _check_deadline(protocol_ref: weakref.ref[Any], transport: asyncio.Transport, timeout: float) -> None:
    """The deadline has come: close ``transport`` unless its handshake is done. ``protocol_ref`` is the HTTP
    protocol; once the connection was upgraded it may be gone."""
    if transport.is_closing():
        return
    protocol = protocol_ref()
    if protocol is not None:
        protocol._tether_deadline = None
    current = transport.get_protocol()
    # Not upgraded: no request has had all its headers yet. Upgraded: the application has not answered.
    if (getattr(protocol, "cycle", None) is None) if current is protocol else not _handshake_done(current):
        logger.debug(
            "Closing a connection from %s that did not complete its handshake within %g s.",
            transport.get_extra_info("peername"),
            timeout,
        )
        transport.close()


def with_handshake_deadline(http_protocol: type[asyncio.Protocol], timeout: float) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol class that closes connections not through their handshake in time.

    ``timeout`` seconds after the TCP connection is made, the connection is closed if the request headers have not
    all arrived or if it was upgraded to a WebSocket that the application has not accepted or refused yet. One DEBUG
    line on ``tether.handshake`` per closed connection (a flood of them is what this is for).
    """

    class HandshakeDeadline(http_protocol):  # type: ignore[valid-type, misc]
        _tether_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            # The timer holds this protocol weakly. Once the connection is upgraded to a WebSocket, the protocol is
            # garbage (a cycle with its parser) that the collector frees while it is young; held by the timer, it
            # would live past the young collections and stay until a full one, several KiB per connection.
            self._tether_deadline = asyncio.get_running_loop().call_later(
                timeout, _check_deadline, weakref.ref(self), transport, timeout
            )

        def connection_lost(self, exc: Exception | None) -> None:
            if self._tether_deadline is not None:
                self._tether_deadline.cancel()
                self._tether_deadline = None
            super().connection_lost(exc)

    HandshakeDeadline.__name__ = HandshakeDeadline.__qualname__ = f"HandshakeDeadline{http_protocol.__name__}"
    return HandshakeDeadline


_http_protocol: type[asyncio.Protocol] | None = None


def __getattr__(name: str) -> Any:
    """``HTTPProtocol``: uvicorn's default HTTP protocol with tether's handshake deadline, for ``uvicorn --http``.

    Built when first asked for, so that importing this module needs neither uvicorn nor configured settings.
    """
    global _http_protocol
    if name != "HTTPProtocol":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _http_protocol is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        from tether.limits import handshake_timeout

        _http_protocol = with_handshake_deadline(AutoHTTPProtocol, handshake_timeout())
    return _http_protocol
