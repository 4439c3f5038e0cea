"""How much history each stream keeps: the ``TETHER_STREAMS`` setting, read and checked.

``TETHER_STREAMS`` maps fnmatch patterns of stream names to bounds, ``{"chat.*": {"max_length": 1000, "max_age":
3600}}``; the first pattern that matches a stream's name gives its bounds, a key left out keeps its default, and a
stream that matches no pattern gets both defaults. ``TETHER_STREAMS_WATCH_INTERVAL`` is how often (seconds) each
process checks that Redis still holds its subscribers' memberships and the epochs they follow (``watch.py``). Pure:
nothing here touches a layer.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_WATCH_INTERVAL",
    "MAX_MAX_LENGTH",
    "StreamBounds",
    "StreamPolicy",
    "require_watch_interval",
    "settings_policy",
    "settings_watch_interval",
]

#: Messages a stream keeps by default (the oldest go first).
DEFAULT_MAX_LENGTH = 1000
#: Seconds a message is kept by default; a stream silent this long is forgotten whole (its epoch changes).
DEFAULT_MAX_AGE = 86400.0
#: The most messages a stream may keep: recovery reads them in one call, so this bounds its cost.
MAX_MAX_LENGTH = 100_000
#: Seconds between two checks of the watch (``watch.py``): how long a subscriber may go unaware that Redis lost its
#: membership (a restart without persistence) before it is put back and told to catch up. One script call per Redis
#: host per check, whatever the number of subscribers.
DEFAULT_WATCH_INTERVAL = 5.0


@dataclass(frozen=True)
class StreamBounds:
    """The history one stream keeps: at most ``max_length`` messages, none older than ``max_age`` seconds."""

    max_length: int = DEFAULT_MAX_LENGTH
    max_age: float = DEFAULT_MAX_AGE

    @property
    def max_age_ms(self) -> int:
        return max(1, int(self.max_age * 1000))


def _bounds(pattern: str, value: Any) -> StreamBounds:
    where = f"TETHER_STREAMS[{pattern!r}]"
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be a dict with max_length and/or max_age, not {type(value).__name__}.")
    unknown = sorted(set(value) - {"max_length", "max_age"})
    if unknown:
        raise TypeError(f"{where} has unknown key(s) {unknown}; it takes max_length and max_age.")
    max_length = value.get("max_length", DEFAULT_MAX_LENGTH)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or not 1 <= max_length <= MAX_MAX_LENGTH:
        raise ValueError(f"{where}['max_length'] must be an int from 1 to {MAX_MAX_LENGTH}, not {max_length!r}.")
    max_age = value.get("max_age", DEFAULT_MAX_AGE)
    if not isinstance(max_age, (int, float)) or isinstance(max_age, bool) or not math.isfinite(max_age) or max_age <= 0:
        raise ValueError(f"{where}['max_age'] must be a positive number of seconds, not {max_age!r}.")
    return StreamBounds(max_length, float(max_age))


class StreamPolicy:
    """The bounds of every stream name, from a ``TETHER_STREAMS``-shaped dict (checked here: ``TypeError`` or
    ``ValueError`` naming the pattern and key at fault)."""

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise TypeError(f"TETHER_STREAMS must be a dict of name pattern -> bounds, not {type(config).__name__}.")
        self._rules: list[tuple[re.Pattern[str], StreamBounds]] = []
        for pattern, value in config.items():
            if not isinstance(pattern, str) or not pattern:
                raise TypeError(f"TETHER_STREAMS keys must be fnmatch patterns of stream names, not {pattern!r}.")
            self._rules.append((re.compile(fnmatch.translate(pattern)), _bounds(pattern, value)))
        self._default = StreamBounds()
        self._cache: dict[str, StreamBounds] = {}

    def bounds_for(self, stream: str) -> StreamBounds:
        """The bounds of ``stream``: the first matching pattern's, else the defaults."""
        bounds = self._cache.get(stream)
        if bounds is None:
            bounds = next((rule for pattern, rule in self._rules if pattern.match(stream)), self._default)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[stream] = bounds
        return bounds


def settings_policy() -> StreamPolicy:
    """The policy of the ``TETHER_STREAMS`` setting (defaults when it is absent or Django is not configured)."""
    from django.conf import settings

    if not settings.configured:
        return StreamPolicy()
    return StreamPolicy(getattr(settings, "TETHER_STREAMS", None))


def require_watch_interval(value: Any) -> float:
    """``value`` as the watch interval in seconds; ``ValueError`` unless it is a finite number of at least 0.05."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0.05:
        raise ValueError(
            f"TETHER_STREAMS_WATCH_INTERVAL must be a number of seconds of at least 0.05, not {value!r} (default "
            f"{DEFAULT_WATCH_INTERVAL:g})."
        )
    return float(value)


def settings_watch_interval() -> float:
    """The ``TETHER_STREAMS_WATCH_INTERVAL`` setting, checked (the default when it is absent or Django is not
    configured)."""
    from django.conf import settings

    if not settings.configured:
        return DEFAULT_WATCH_INTERVAL
    return require_watch_interval(getattr(settings, "TETHER_STREAMS_WATCH_INTERVAL", DEFAULT_WATCH_INTERVAL))
