"""Response headers as consumers take them from users and hand them to the server.

Users give headers as a dict or as ``(name, value)`` pairs, in ``str`` or ``bytes``. ASGI wants bytes; a test
suite written for Channels compares the event with what it passed in. So each pair keeps the shape it came in (a
two-item list stays a list, a tuple a tuple, a dict's items become tuples, as in Channels) and only ``str`` parts
are encoded, in latin-1 as HTTP headers are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["Headers", "encode_headers"]

#: What consumers accept as response headers.
Headers = Iterable[Any] | dict[Any, Any]


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def encode_headers(headers: Headers | None) -> list[Any]:
    """The headers as a list of byte-string pairs, each pair in the container it was given in.

    Raises ``ValueError`` for a pair that does not have exactly two parts, naming it.
    """
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, dict) else headers
    encoded: list[Any] = []
    for pair in pairs:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise ValueError(f"A response header must be a (name, value) pair, not {pair!r}.") from None
        encoded_pair = (_as_bytes(name), _as_bytes(value))
        encoded.append(list(encoded_pair) if isinstance(pair, list) else encoded_pair)
    return encoded
