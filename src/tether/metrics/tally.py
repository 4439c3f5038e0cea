"""What a process counts while it serves, in plain Python: the sans-I/O half of ``tether.metrics``.

The hot path (a message handled, a frame sent) only adds to the dicts of one ``Tally``; nothing here imports
``prometheus_client`` or takes a lock. ``tether.metrics.export`` copies what changed into prometheus_client's metrics
about once a second (and before every scrape in the scraping process). Writing to prometheus_client on every message
costs 0.7 µs per counter and 1.5 µs per histogram observation in its multiprocess mode (each is a locked write to a
memory-mapped file), about 3 µs per echoed message against a whole echo of 15 µs of server CPU; a dict increment
costs 0.06 µs (measured with ``timeit`` on the same machine, prometheus_client 0.26).

All counts are made in the event loop's thread (consumers count in the loop that serves them, sync consumers
included: their sends and dispatches are awaited there), so no lock is needed; the exporter only reads.

Every label value comes from a bounded set: consumer class names (fixed by the code), the kinds below, close codes
folded by ``close_code_label``, layer aliases (fixed by the settings), and the reason names of ``DROP_REASONS``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = [
    "DROP_REASONS",
    "DURATION_BUCKETS",
    "LAG_BUCKETS",
    "LIFECYCLE_KINDS",
    "RECEIVED_KINDS",
    "TIMED_EVERY",
    "ConsumerCounts",
    "Tally",
    "close_code_label",
    "message_kind",
]

#: Upper bounds (seconds) of the handler and layer duration histograms; a last, infinite bucket is implied.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Upper bounds (seconds) of the event-loop lag histogram: a healthy loop stays under a few milliseconds.
LAG_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Close codes reported by value (RFC 6455's, and tether's own 4401 for a revoked login); others are folded into
#: ``"3xxx"``, ``"4xxx"`` or ``"other"`` so a client cannot grow the label set.
_KNOWN_CLOSE_CODES = frozenset([*range(1000, 1016), 4401])

#: ``layer.stats()`` keys that count a message not delivered, and the ``reason`` label each is exported under.
DROP_REASONS: dict[str, str] = {
    "full_drops": "channel_full",
    "group_full_drops": "channel_full",
    "expired": "expired",
    "decode_errors": "decode_error",
    "refused_misrouted": "refused",
    "refused_stale": "refused",
    "refused_members": "refused",
    "dead_lettered": "dead_lettered",
    "unknown_channel_drops": "unknown_channel",
    "undeliverable": "undeliverable",
    "group_members_unreadable": "members_unreadable",
    "prefetch_lost": "prefetch_lost",
}

#: One message in this many of each kind (text, binary, layer) and consumer class has its handler timed, and its
#: duration counts for all of them; the messages themselves are all counted. Two clock reads, a coroutine and a
#: histogram update per message cost more than everything else metrics do per message (benchmarks/metrics.py).
TIMED_EVERY = 8

#: The handler kinds that are messages received (the others are the connection's own events).
RECEIVED_KINDS = ("text", "binary", "layer")

#: The connection's own events and the ``kind`` label of their handlers.
LIFECYCLE_KINDS = {
    "websocket.connect": "connect",
    "websocket.disconnect": "disconnect",
    "http.request": "http",
    "http.disconnect": "disconnect",
}


def close_code_label(code: int | None) -> str:
    """The ``code`` label of a WebSocket close: known codes by value, application codes by range."""
    if code in _KNOWN_CLOSE_CODES:
        return str(code)
    if isinstance(code, int) and 3000 <= code <= 3999:
        return "3xxx"
    if isinstance(code, int) and 4000 <= code <= 4999:
        return "4xxx"
    return "other"


def message_kind(message: Any) -> str:
    """The ``kind`` label of a dispatched message: ``text`` or ``binary`` for a client frame, ``connect``,
    ``disconnect`` or ``http`` for the connection's own events, ``layer`` for everything else (channel layer
    events, whose types are the project's and are never used as labels)."""
    message_type = message.get("type")
    if message_type == "websocket.receive":
        return "text" if message.get("text") is not None else "binary"
    return LIFECYCLE_KINDS.get(message_type, "layer") if type(message_type) is str else "layer"


class _Histogram:
    """Observations of one label set: a count per bucket (not cumulative; the last is +Inf) and their sum.

    ``handled`` counts the messages of a handler kind exactly, of which one in ``every`` is timed and observed as
    ``every`` observations (``TIMED_EVERY`` for messages received, 1 for the connection's own events).
    """

    __slots__ = ("bounds", "counts", "every", "handled", "total")

    def __init__(self, bounds: tuple[float, ...], every: int = 1) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.handled = 0
        self.every = every

    def observe(self, value: float, weight: int = 1) -> None:
        """Count ``value`` ``weight`` times (a sampled value stands for the messages that were not timed)."""
        # bisect_left: a value equal to a bound belongs to that bound's bucket (Prometheus's "le").
        self.counts[bisect_left(self.bounds, value)] += weight
        self.total += value * weight

    @property
    def count(self) -> int:
        return sum(self.counts)


class ConsumerCounts:
    """The counts of one consumer class, held by each of its connections so that the hot path is an attribute
    increment and a histogram observation, with no label tuple built or looked up per message.

    The messages a consumer received are the ``handled`` counts of its ``text``, ``binary`` and ``layer`` handler
    histograms (every message; the histograms' observations are a sample of them, ``TIMED_EVERY``).
    """

    __slots__ = ("attempts", "closes", "handlers", "open", "sent_binary", "sent_text")

    def __init__(self) -> None:
        #: Connections accepted and not yet ended.
        self.open = 0
        #: outcome -> handshakes ended that way: accepted, refused, denied, failed, abandoned.
        self.attempts: dict[str, int] = {}
        #: close code label -> accepted connections that ended with that code.
        self.closes: dict[str, int] = {}
        #: kind -> handler durations.
        self.handlers: dict[str, _Histogram] = {}
        self.sent_text = 0
        self.sent_binary = 0

    def handler(self, kind: str) -> _Histogram:
        """The histogram of handlers of messages of ``kind``, created on first use."""
        histogram = self.handlers.get(kind)
        if histogram is None:
            every = TIMED_EVERY if kind in RECEIVED_KINDS else 1
            histogram = self.handlers[kind] = _Histogram(DURATION_BUCKETS, every)
        return histogram

    def answered(self, outcome: str) -> None:
        """A handshake was answered (accepted, refused, denied) or ended unanswered (failed, abandoned)."""
        self.attempts[outcome] = self.attempts.get(outcome, 0) + 1
        if outcome == "accepted":
            self.open += 1

    def closed(self, close_code: int | None) -> None:
        """An accepted connection ended with ``close_code``."""
        self.open -= 1
        label = close_code_label(close_code)
        self.closes[label] = self.closes.get(label, 0) + 1


class Tally:
    """The running totals of one process: per consumer class, per layer alias and operation, and the loop lag."""

    def __init__(self) -> None:
        self.consumers: dict[str, ConsumerCounts] = {}
        #: (alias, operation) -> layer call durations; (alias, operation, error class) -> failed calls.
        self.layer_seconds: dict[tuple[str, str], _Histogram] = {}
        self.layer_errors: dict[tuple[str, str, str], int] = {}
        #: Event-loop lag samples of this process's probes.
        self.loop_lag = _Histogram(LAG_BUCKETS)

    def consumer(self, name: str) -> ConsumerCounts:
        """The counts of consumer class ``name``, created on first use (once per class: a connection keeps them)."""
        counts = self.consumers.get(name)
        if counts is None:
            counts = self.consumers[name] = ConsumerCounts()
        return counts

    def layer_call(self, alias: str, operation: str, seconds: float, error: BaseException | None) -> None:
        key = (alias, operation)
        histogram = self.layer_seconds.get(key)
        if histogram is None:
            histogram = self.layer_seconds[key] = _Histogram(DURATION_BUCKETS)
        histogram.observe(seconds)
        if error is not None:
            self.layer_error(alias, operation, error)

    def layer_error(self, alias: str, operation: str, error: BaseException) -> None:
        failed = (alias, operation, type(error).__name__)
        self.layer_errors[failed] = self.layer_errors.get(failed, 0) + 1

    def lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
