"""Exact origins: the rules of ``ExactOriginValidator``, as plain functions and data that do no I/O.

An origin is the scheme, host and port of the page that opens a socket; the browser sends it in the ``Origin``
header of the handshake, serialised as ``scheme://host[:port]`` with the host in lowercase ASCII (punycode for
international names), IPv6 addresses in brackets and the scheme's default port left out. Two pages share an origin
only when all three parts are equal, which is the boundary the browser itself draws: a page on
``http://example.com:8080`` (a dev server, an admin tool) is not ``https://example.com``, even though both are the
host ``example.com``. The host-only patterns of ``OriginValidator`` and ``ALLOWED_HOSTS`` cannot say that; the
entries here can:

* ``"https://example.com"``: that scheme and host on the scheme's default port (80 for http, 443 for https);
* ``"https://example.com:8443"``: that port instead;
* ``"https://*.example.com"``: every subdomain of ``example.com`` at any depth (``chat.example.com``,
  ``a.b.example.com``), on that scheme and port, but neither ``example.com`` itself (list it too) nor a host that
  merely ends with the same letters (``evilexample.com``);
* ``"http://[::1]:8000"``, ``"http://127.0.0.1:8000"``: IP addresses, written as a browser writes them.

Entries are case-insensitive, and an international host may be written in Unicode (``https://bücher.example``):
it is compared in the punycode form the browser sends. ``parse_allowed_origin`` refuses, with a message that says
what to write instead, every entry that could never match a browser's origin or would match far more than meant.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AllowedOrigin", "ExactOrigins", "Origin", "parse_allowed_origin", "parse_origin_header"]

#: The port an origin has when it names none, by scheme. Pages are served over http and https only.
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Longer ``Origin`` values are not origins; refused without parsing.
MAX_ORIGIN_LENGTH = 2048

# scheme "://" host [":" port], nothing else: no user name, path, query or fragment. The host is either an IPv6
# address in brackets or a run without brackets and colons; its characters are checked by _normal_host.
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(\[[^\]]*\]|[^:\[\]]*)(?::([0-9]{1,5}))?", re.ASCII | re.IGNORECASE)
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*", re.ASCII)
# One DNS label after IDNA: letters, digits, '-' (not at either end) and '_' (found in some internal names).
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)", re.ASCII)
# Python's "idna" codec implements IDNA 2003, which maps these characters differently from browsers (UTS 46).
_IDNA_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")
_WILDCARD = "*."


@dataclass(frozen=True)
class Origin:
    """One origin: lowercase scheme, normalised host (IPv6 without brackets), and port.

    ``port`` is the explicit port or the scheme's default; None only for a scheme without a default port (such as a
    browser extension's ``chrome-extension://<id>``) that names none.
    """

    scheme: str
    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port is None or self.port == DEFAULT_PORTS.get(self.scheme):
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class AllowedOrigin:
    """One parsed entry of an allowed-origins list: an exact origin, or with ``subdomains`` every subdomain of
    ``origin.host`` (the part after ``*.``) on the same scheme and port."""

    origin: Origin
    subdomains: bool = False

    def matches(self, origin: Origin) -> bool:
        """Whether ``origin`` is this entry's origin (or, for a wildcard, one of its subdomains')."""
        if origin.scheme != self.origin.scheme or origin.port != self.origin.port:
            return False
        if self.subdomains:
            # The dot before the suffix keeps "evilexample.com" out of "*.example.com"; the bare domain is out too.
            return origin.host.endswith(f".{self.origin.host}")
        return origin.host == self.origin.host

    def __str__(self) -> str:
        text = str(self.origin)
        return text.replace("://", f"://{_WILDCARD}", 1) if self.subdomains else text


def _normal_host(host: str) -> str | None:
    """``host`` as a browser serialises it (lowercase ASCII, canonical IP address), or None when it is not a host.

    Non-ASCII hosts are not handled here: a browser never sends one, and entries convert theirs first.
    """
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.IPv6Address(host[1:-1]).compressed if "%" not in host else None
        except ValueError:
            return None
    if host.endswith("."):
        host = host[:-1]  # "example.com." is the same host, written fully qualified
    labels = host.split(".")
    if not host.isascii() or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if all(label.isdigit() for label in labels):
        # Browsers write IPv4 addresses as four decimal numbers ("127.1" becomes "127.0.0.1" before it is sent).
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    return host


def parse_origin_header(value: str) -> Origin | None:
    """The origin in one ``Origin`` header value, or None when it is not a usable origin.

    None for ``null`` (sandboxed frames, ``file:`` pages, some redirects: an attacker can produce it at will), an
    empty or over-long value, and anything that is not exactly ``scheme://host[:port]``.
    """
    if not value or len(value) > MAX_ORIGIN_LENGTH:
        return None
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    scheme, host_text, port_text = match.groups()
    host = _normal_host(host_text)
    if host is None:
        return None
    scheme = scheme.lower()
    port = int(port_text) if port_text is not None else DEFAULT_PORTS.get(scheme)
    if port is not None and not 0 < port <= 65535:
        return None
    return Origin(scheme, host, port)


def _entry_error(entry: str, fix: str) -> ValueError:
    return ValueError(f"{entry!r} is not an origin: {fix}")


def parse_allowed_origin(entry: object) -> AllowedOrigin:
    """Parse one allowed-origin entry (``"https://example.com"``, ``"https://*.example.com:8443"``).

    Raises ``TypeError`` for a value that is not a string and ``ValueError``, saying what to write instead, for a
    string that is not a ``scheme://host[:port]`` origin, that names a WebSocket URL (``wss://``) rather than a
    page, or that would allow every origin (``*``, ``null``, a wildcard over a whole top-level domain).
    """
    if not isinstance(entry, str):
        raise TypeError(f"Allowed origins are strings such as 'https://example.com', not {entry!r}.")
    text = entry.strip().lower()
    if text == "*":
        raise _entry_error(
            entry,
            "it would let pages on any site open sockets with your users' cookies. List the origins of your own "
            "pages, such as 'https://example.com'.",
        )
    if text == "null":
        raise _entry_error(
            entry, "'null' is the origin of sandboxed frames and file: pages, which any site can create; remove it."
        )
    scheme, separator, rest = text.partition("://")
    if not separator:
        raise _entry_error(entry, f"it has no scheme; write 'https://{text}' (or 'http://...' for a dev server).")
    if scheme in ("ws", "wss"):
        page_scheme = "https" if scheme == "wss" else "http"
        raise _entry_error(
            entry,
            f"that is the address of a WebSocket, but an origin is the address of the page that opens it; "
            f"write '{page_scheme}://{rest}'.",
        )
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority != rest:
        raise _entry_error(entry, f"an origin has no path, query or fragment; write '{scheme}://{authority}'.")
    if "@" in authority:
        raise _entry_error(entry, f"an origin has no user name; write '{scheme}://{authority.rpartition('@')[2]}'.")
    subdomains = authority.startswith(_WILDCARD)
    if subdomains:
        authority = authority[len(_WILDCARD) :]
    host_text, port_text = _split_authority(entry, authority)
    if host_text.startswith("."):
        raise _entry_error(entry, f"for a domain's subdomains, write '{scheme}://*{host_text}'.")
    if "*" in host_text:
        raise _entry_error(
            entry, "'*' is only allowed as the whole first label, as in 'https://*.example.com' (subdomains)."
        )
    host = _normal_host(_to_ascii(entry, host_text))
    if host is None or _SCHEME.fullmatch(scheme) is None:
        raise _entry_error(entry, "write a scheme and a host name or IP address, such as 'https://example.com'.")
    if subdomains and (":" in host or host.replace(".", "").isdigit() or "." not in host):
        raise _entry_error(
            entry,
            "'*.' needs a domain of at least two labels after it ('https://*.example.com'), not an IP address or "
            "a whole top-level domain.",
        )
    if port_text is not None:
        port: int | None = int(port_text) if port_text.isascii() and port_text.isdigit() else 0
        if not port or port > 65535:
            raise _entry_error(entry, f"the port {port_text!r} is not a number from 1 to 65535.")
    else:
        port = DEFAULT_PORTS.get(scheme)
    return AllowedOrigin(Origin(scheme, host, port), subdomains)


def _split_authority(entry: str, authority: str) -> tuple[str, str | None]:
    """``host[:port]`` into its host (IPv6 with its brackets) and port text (None when there is no port)."""
    if authority.startswith("["):
        host, bracket, after = authority.partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise _entry_error(entry, "write an IPv6 address in brackets, as in 'http://[::1]:8000'.")
        return f"{host}]", after[1:] if after else None
    if authority.count(":") > 1:
        raise _entry_error(entry, "write an IPv6 address in brackets, as in 'http://[::1]:8000'.")
    host, colon, port = authority.partition(":")
    return host, port if colon else None


def _to_ascii(entry: str, host: str) -> str:
    """An international host name in the punycode a browser sends (``bücher.example`` → ``xn--bcher-kva.example``)."""
    if host.isascii():
        return host
    if _IDNA_DEVIATIONS.intersection(host):
        raise _entry_error(
            entry,
            "browsers and Python convert some letters of this host (such as 'ß') differently; write its ASCII "
            "form (xn--...), as your browser shows it in the Origin header.",
        )
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _entry_error(entry, "the host is not a valid international domain name.") from None


class ExactOrigins:
    """A parsed allowed-origins list, and the check of a handshake's ``Origin`` header against it.

    ``where`` names the list in error messages (``"TETHER_ALLOWED_ORIGINS"``). Raises ``ValueError`` (naming the
    entry as ``where[index]``) or ``TypeError`` for entries that ``parse_allowed_origin`` refuses, and for a single
    string given instead of a list.
    """

    def __init__(self, entries: Iterable[str], where: str = "allowed_origins") -> None:
        if isinstance(entries, (str, bytes)):
            raise TypeError(
                f"{where} must be a list of origins, not the single string {entries!r}; write [{entries!r}]."
            )
        parsed: list[AllowedOrigin] = []
        for index, entry in enumerate(entries):
            try:
                parsed.append(parse_allowed_origin(entry))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{where}[{index}] {exc}") from None
        self.entries = tuple(parsed)
        self._exact = frozenset(entry.origin for entry in parsed if not entry.subdomains)
        self._wildcards = tuple(entry for entry in parsed if entry.subdomains)

    def allows(self, origin_values: list[str]) -> bool:
        """Whether a handshake whose ``Origin`` header values are ``origin_values`` is allowed.

        Exactly one value is needed: none means the client is not a browser, several are not a browser's either.
        """
        if len(origin_values) != 1:
            return False
        origin = parse_origin_header(origin_values[0])
        if origin is None:
            return False
        return origin in self._exact or any(entry.matches(origin) for entry in self._wildcards)
