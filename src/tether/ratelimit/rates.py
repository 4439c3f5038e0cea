"""Rates and token buckets as plain data: the parsing of ``"20/min"`` and the arithmetic of one bucket, without I/O.

A rate ``"N/period"`` is a bucket of ``N`` tokens that refills at ``N`` per ``period``: a client may spend the whole
bucket at once (a burst of ``N``), then one token every ``period / N``. ``"10/s burst 50"`` keeps the refill of ten a
second and lets the bucket hold fifty. Each allowed action takes one token; a refused action takes nothing, so a
client that keeps trying while limited does not push its own recovery back.

The in-memory store uses ``TokenBucket`` directly; the Redis store's Lua script (``stores.py``) does the same
arithmetic on a hash, and the tests hold the two to the same answers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Rate", "TokenBucket", "parse_rate"]

#: Seconds per period unit; a unit may carry a multiplier (``"3/10s"``: three per ten seconds).
_UNITS = {
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], 1.0),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], 60.0),
    **dict.fromkeys(["h", "hour", "hours"], 3600.0),
    **dict.fromkeys(["d", "day", "days"], 86400.0),
}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*(?:burst\s+(\d+)\s*)?", re.IGNORECASE)
_EXAMPLES = '"20/min", "10/s", "3/10s" or "10/s burst 50"'


@dataclass(frozen=True)
class Rate:
    """A token bucket's shape: ``capacity`` tokens at most, refilled at ``per_second`` tokens a second.

    ``text`` is the rate as written in the settings, for log lines and error messages.
    """

    capacity: int
    per_second: float
    text: str = ""

    def __post_init__(self) -> None:
        if type(self.capacity) is not int or self.capacity < 1:
            raise ValueError(f"A rate's bucket holds at least one token, not {self.capacity!r}.")
        if not 0 < self.per_second < math.inf:
            raise ValueError(f"A rate refills a positive, finite number of tokens a second, not {self.per_second!r}.")

    def __str__(self) -> str:
        return self.text or f"{self.capacity} tokens, {self.per_second:g}/s"

    @property
    def seconds_to_fill(self) -> float:
        """How long an empty bucket takes to be full again: after that, a bucket is as good as forgotten."""
        return self.capacity / self.per_second


def parse_rate(value: str | Rate) -> Rate:
    """The ``Rate`` written as ``"N/period"`` with an optional ``" burst M"``; a ``Rate`` is returned as it is.

    The period is a unit (``s``, ``min``, ``h``, ``day``, singular or plural, or their long names) with an optional
    number before it: ``"20/min"``, ``"3/10s"``, ``"1/1000s"``. Raises ``ValueError`` naming the accepted forms.
    """
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ValueError(f"A rate is a string such as {_EXAMPLES}, not {type(value).__name__} {value!r:.60}.")
    match = _RATE.fullmatch(value)
    unit = _UNITS.get(match[3].lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{value!r:.60} is not a rate: write a count per period, such as {_EXAMPLES}.")
    count = int(match[1])
    period = float(match[2] or 1) * unit
    capacity = int(match[4]) if match[4] else count
    if count < 1 or period <= 0 or capacity < 1:
        raise ValueError(f"{value!r} allows nothing: the count, the period and the burst must be above zero.")
    return Rate(capacity, count / period, value.strip())


class TokenBucket:
    """One bucket: ``tokens`` left as of ``updated`` (a clock reading), and whether its last take was refused.

    Small and slotted: the in-memory store keeps one per client key, and each connection keeps one for its messages.
    """

    __slots__ = ("limited", "tokens", "updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self.tokens = float(rate.capacity)
        self.updated = now
        self.limited = False

    def take(self, rate: Rate, now: float) -> float:
        """Take one token: ``0.0`` when there was one, else the seconds until there will be one (nothing taken).

        A clock that went backwards refills nothing (and is not taken as the new reference), so it cannot grant
        tokens twice for the same time.
        """
        if now > self.updated:
            self.tokens = min(rate.capacity, self.tokens + (now - self.updated) * rate.per_second)
            self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.limited = False
            return 0.0
        self.limited = True
        return (1 - self.tokens) / rate.per_second
