"""Refuse WebSocket handshakes from pages on other sites, by their ``Origin`` header.

Browsers attach cookies to a WebSocket handshake whatever page opens it, and the same-origin policy does not stop a
page from opening a WebSocket to another site. Without an Origin check, a page on ``evil.example`` can open a socket
to your site and act as your logged-in visitor (cross-site WebSocket hijacking). The browser sets ``Origin`` to the
page's origin and scripts cannot change it, so the server checks it against the origins it trusts.

``OriginValidator`` does the check against a list of patterns, ``AllowedHostsOriginValidator`` against
``ALLOWED_HOSTS``; both accept any scheme and port of an allowed host, as Channels does. ``ExactOriginValidator``
(tether-only, recommended in production) checks the scheme and the port too, against ``TETHER_ALLOWED_ORIGINS``, so
a page on another port of your host (a dev server, an admin tool) cannot ride your users' cookies. A refused
handshake is closed before it is accepted, which the server answers with HTTP 403.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.http import is_same_domain

from tether.generic.websocket import AsyncWebsocketConsumer
from tether.security.origins import ExactOrigins
from tether.types import ASGIApp, Receive, Scope, Send

__all__ = ["AllowedHostsOriginValidator", "ExactOriginValidator", "OriginValidator", "WebsocketDenier"]

logger = logging.getLogger("tether.security.websocket")

#: The port an origin means when it names none, by scheme.
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: What Django allows when DEBUG is on and ALLOWED_HOSTS is empty.
DEBUG_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: Longer Origin headers are not origins; refused without parsing.
_MAX_ORIGIN_LENGTH = 2048


class WebsocketDenier(AsyncWebsocketConsumer):
    """A consumer that refuses every connection: it closes before accepting, so the server answers HTTP 403."""

    # A refused connection needs no channel layer, so none is set up (no layer channel for attackers to make).
    channel_layer_alias = None  # type: ignore[assignment]

    async def connect(self) -> None:
        await self.close()


_deny = WebsocketDenier.as_asgi()


@dataclass(frozen=True)
class _Origin:
    """A parsed origin, or a pattern's parts: lowercase scheme and host; ``port`` None means "any" in a pattern."""

    scheme: str | None
    host: str
    port: int | None


def _parse_origin(value: str) -> _Origin | None:
    """Parse an ``Origin`` header value (``scheme://host[:port]``); None when it is not a usable origin."""
    if not value or len(value) > _MAX_ORIGIN_LENGTH or value.strip().lower() == "null":
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    if (
        not parts.scheme
        or not host
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or any(char.isspace() for char in value.strip())
    ):
        return None
    scheme = parts.scheme.lower()
    return _Origin(scheme, host.lower(), port if port is not None else DEFAULT_PORTS.get(scheme))


def _parse_pattern(pattern: str) -> _Origin | None:
    """Parse an allowed-origin pattern; None for ``*``. Raises ``ValueError`` for one that can match nothing."""
    if not isinstance(pattern, str):
        raise TypeError(f"Allowed origins must be strings, not {pattern!r}.")
    text = pattern.strip().lower()
    if text == "*":
        return None
    has_scheme = "://" in text
    try:
        parts = urlsplit(text if has_scheme else f"//{text}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"Allowed origin {pattern!r} is not valid: {exc}.") from None
    host = parts.hostname or ""
    if not host or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(
            f"Allowed origin {pattern!r} is not valid: use '*', a host ('example.com'), a domain with its "
            "subdomains ('.example.com'), or a full origin ('https://example.com:8443')."
        )
    if not has_scheme:
        return _Origin(None, host, port)
    return _Origin(parts.scheme, host, port if port is not None else DEFAULT_PORTS.get(parts.scheme))


def _matches(origin: _Origin, pattern: _Origin) -> bool:
    if pattern.scheme is not None and pattern.scheme != origin.scheme:
        return False
    if pattern.port is not None and pattern.port != origin.port:
        return False
    return is_same_domain(origin.host, pattern.host)


class _CompiledOrigins:
    """The patterns of one allowed-origins list, parsed once."""

    def __init__(self, allowed_origins: list[str]) -> None:
        parsed = [_parse_pattern(pattern) for pattern in allowed_origins]
        self.allow_any = None in parsed
        self.patterns = tuple(pattern for pattern in parsed if pattern is not None)

    def allows(self, origin_values: list[str]) -> bool:
        if self.allow_any:
            return True
        if len(origin_values) != 1:
            return False
        origin = _parse_origin(origin_values[0])
        return origin is not None and any(_matches(origin, pattern) for pattern in self.patterns)


def _origin_values(scope: Scope) -> list[str]:
    return [value.decode("latin-1") for name, value in scope.get("headers") or () if name.lower() == b"origin"]


class OriginValidator:
    """Let a WebSocket handshake through only when its ``Origin`` header matches one of ``allowed_origins``.

    Patterns (case-insensitive):

    * ``"*"``: any origin, and a handshake without one;
    * ``"example.com"``: that host, any scheme and port; ``"example.com:8000"`` also fixes the port;
    * ``".example.com"``: ``example.com`` and all its subdomains;
    * ``"https://example.com:8443"``: that scheme, host and port; without a port, the scheme's default
      (``https://example.com`` is port 443). A subdomain pattern works here too: ``"https://.example.com"``.

    Without ``"*"``, a handshake with no ``Origin``, with ``Origin: null`` (sandboxed pages, ``file:`` URLs), with
    several Origin headers or with one that is not a ``scheme://host[:port]`` origin is refused. A refused handshake
    is closed before it is accepted (the server answers HTTP 403) and logged. Scopes other than WebSocket pass
    through unchecked. Raises ``TypeError`` / ``ValueError`` at construction for patterns that cannot work.
    """

    def __init__(self, application: ASGIApp, allowed_origins: Iterable[str]) -> None:
        if isinstance(allowed_origins, (str, bytes)):
            raise TypeError(
                f"allowed_origins must be a list of patterns, not the single string {allowed_origins!r}; "
                f"write [{allowed_origins!r}]."
            )
        self.application = application
        self.allowed_origins = list(allowed_origins)
        self._compiled = _CompiledOrigins(self.allowed_origins)

    def compiled_origins(self) -> _CompiledOrigins:
        """The parsed patterns to check against (``AllowedHostsOriginValidator`` rebuilds them from settings)."""
        return self._compiled

    def is_allowed(self, scope: Scope) -> bool:
        """Whether the handshake in ``scope`` comes from an allowed origin."""
        return self.compiled_origins().allows(_origin_values(scope))

    # Channels' per-origin methods, for subclasses written for Channels. They take what ``urllib.parse.urlparse``
    # returns for the Origin header (None when there is none) and apply tether's rules, so they and ``is_allowed``
    # always agree. New code overrides ``is_allowed`` instead.

    def valid_origin(self, parsed_origin: Any) -> bool:
        """Whether a parsed origin (or None, for a handshake without one) is allowed."""
        if parsed_origin is None:
            return self.compiled_origins().allow_any
        return self.validate_origin(parsed_origin)

    def validate_origin(self, parsed_origin: Any) -> bool:
        """Whether a parsed origin matches one of the allowed origins (``"*"`` matches anything)."""
        return self.compiled_origins().allows([parsed_origin.geturl()])

    def match_allowed_origin(self, parsed_origin: Any, pattern: str) -> bool:
        """Whether a parsed origin matches the one allowed-origin ``pattern`` (``"*"`` is not a match here)."""
        origin = _parse_origin(parsed_origin.geturl()) if parsed_origin is not None else None
        parsed_pattern = _parse_pattern(pattern)
        return origin is not None and parsed_pattern is not None and _matches(origin, parsed_pattern)

    def get_origin_port(self, origin: Any) -> int | None:
        """The port of a parsed origin: the one it names, else its scheme's default, else None."""
        return origin.port if origin.port is not None else DEFAULT_PORTS.get(origin.scheme)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket" or self.is_allowed(scope):
            await self.application(scope, receive, send)
            return
        _log_refusal(scope, "the allowed origins")
        await _deny(scope, receive, send)


def _log_refusal(scope: Scope, rule: str) -> None:
    logger.warning(
        "Refused a WebSocket handshake to %r from origin %s: not in %s.",
        scope.get("path"),
        ", ".join(repr(value[:200]) for value in _origin_values(scope)) or "(none)",
        rule,
    )


class AllowedHostsOriginValidator(OriginValidator):
    """An ``OriginValidator`` whose allowed origins are the hosts in ``settings.ALLOWED_HOSTS``.

    ``ALLOWED_HOSTS`` patterns mean what they mean to Django (``"*"``, ``"example.com"``, ``".example.com"``); with
    ``DEBUG`` on and ``ALLOWED_HOSTS`` empty, ``localhost``, ``127.0.0.1`` and ``[::1]`` are allowed, as Django does.
    The setting is read on every handshake, so ``override_settings`` works in tests. Raises
    ``ImproperlyConfigured`` when an entry cannot be used as an origin pattern.
    """

    def __init__(self, application: ASGIApp) -> None:
        self.application = application
        self._cache_key: tuple[tuple[str, ...], bool] | None = None
        self._compiled = _CompiledOrigins([])

    @property
    def allowed_origins(self) -> list[str]:  # type: ignore[override]
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = list(DEBUG_ALLOWED_HOSTS)
        return hosts

    def compiled_origins(self) -> _CompiledOrigins:
        key = (tuple(settings.ALLOWED_HOSTS), bool(settings.DEBUG))
        if key != self._cache_key:
            try:
                self._compiled = _CompiledOrigins(self.allowed_origins)
            except (TypeError, ValueError) as exc:
                raise ImproperlyConfigured(f"ALLOWED_HOSTS cannot be used to check WebSocket origins: {exc}") from exc
            self._cache_key = key
        return self._compiled


#: The setting ``ExactOriginValidator`` reads when it is given no list.
ALLOWED_ORIGINS_SETTING = "TETHER_ALLOWED_ORIGINS"


class ExactOriginValidator:
    """Let a WebSocket handshake through only when its ``Origin`` is one of the allowed origins, scheme, host and
    port all equal; tether-only, and the validator to use in production.

    ``allowed_origins`` lists them (``["https://example.com", "https://*.example.com", "http://localhost:8000"]``,
    rules in ``tether.security.origins``); without it, the ``TETHER_ALLOWED_ORIGINS`` setting is read, on every
    handshake (parsed again only when it changes), so ``override_settings`` works in tests. A handshake without an
    ``Origin``, with ``Origin: null``, with several, or with one that is not ``scheme://host[:port]`` is refused:
    closed before it is accepted (HTTP 403 from the server) and logged. Scopes other than WebSocket pass through.

    Raises ``ImproperlyConfigured`` at construction when the list (or the setting) is missing, is not a list, or has
    an entry that is not an origin (``"example.com"`` without a scheme, ``"wss://..."``, a path, ``"*"``), saying
    which entry and what to write instead.
    """

    def __init__(self, application: ASGIApp, allowed_origins: Iterable[str] | None = None) -> None:
        self.application = application
        self._from_settings = allowed_origins is None
        self._cache_key: object = None
        if allowed_origins is None:
            self._origins = self.compiled_origins()
        else:
            self._origins = _compile_exact(allowed_origins, "allowed_origins")

    @property
    def allowed_origins(self) -> list[str]:
        """The allowed origins, normalised (lowercase, punycode, default ports left out)."""
        return [str(entry) for entry in self.compiled_origins().entries]

    def compiled_origins(self) -> ExactOrigins:
        """The parsed allowed origins; from the setting, parsed again when it has changed."""
        if not self._from_settings:
            return self._origins
        configured = getattr(settings, ALLOWED_ORIGINS_SETTING, None)
        if configured is None:
            raise ImproperlyConfigured(
                f"ExactOriginValidator reads the {ALLOWED_ORIGINS_SETTING} setting, which is not set. List the origins "
                f"of the pages that open WebSockets, as the browser's address bar shows them: "
                f"{ALLOWED_ORIGINS_SETTING} = ['https://example.com'] (or pass the list: "
                "ExactOriginValidator(application, ['https://example.com']))."
            )
        key = tuple(configured) if isinstance(configured, (list, tuple)) else configured
        if key != self._cache_key:
            self._origins = _compile_exact(configured, ALLOWED_ORIGINS_SETTING)
            self._cache_key = key
        return self._origins

    def is_allowed(self, scope: Scope) -> bool:
        """Whether the handshake in ``scope`` comes from an allowed origin."""
        return self.compiled_origins().allows(_origin_values(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket" or self.is_allowed(scope):
            await self.application(scope, receive, send)
            return
        where = ALLOWED_ORIGINS_SETTING if self._from_settings else "the allowed origins"
        _log_refusal(scope, f"{where} (scheme, host and port must all match)")
        await _deny(scope, receive, send)


def _compile_exact(entries: Any, where: str) -> ExactOrigins:
    """``ExactOrigins`` for ``entries``, with any mistake in them raised as ``ImproperlyConfigured``."""
    if isinstance(entries, (str, bytes)):
        raise ImproperlyConfigured(
            f"{where} must be a list of origins, not the single string {entries!r}; write [{entries!r}]."
        )
    if isinstance(entries, Mapping) or not isinstance(entries, Iterable):
        raise ImproperlyConfigured(
            f"{where} must be a list of origins such as ['https://example.com'], not {type(entries).__name__} "
            f"{entries!r:.80}."
        )
    try:
        return ExactOrigins(list(entries), where)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(str(exc)) from exc
