"""The Prometheus side of ``tether.metrics``: the metric definitions, and the exporter that copies a ``Tally`` in.

Importing this module needs ``prometheus_client`` (the ``metrics`` extra). The metrics are registered once per
process in prometheus_client's default registry, so a project's own metrics are served beside them. With
``PROMETHEUS_MULTIPROC_DIR`` set (before the process starts), prometheus_client keeps every process's values in files
there and ``render()`` adds them up, so any worker process answers for all of them.

The exporter runs ``flush()`` in a thread of its own every ``TETHER_METRICS_FLUSH_INTERVAL`` seconds (1 by
default), before each scrape, and when the process exits (where it also removes the process's live gauge files).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Any

from django.core.exceptions import ImproperlyConfigured

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        multiprocess,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the package
    raise ImproperlyConfigured(
        "TETHER_METRICS needs prometheus_client: install tether's metrics extra "
        "(pip install -e '.[metrics]' in a clone of tether), or set TETHER_METRICS = False."
    ) from exc

from tether.metrics.tally import DROP_REASONS, DURATION_BUCKETS, LAG_BUCKETS, RECEIVED_KINDS, Tally, _Histogram

__all__ = ["CONTENT_TYPE_LATEST", "Exporter", "render"]

logger = logging.getLogger("tether.metrics")

OPEN_CONNECTIONS = Gauge(
    "tether_websocket_connections_open",
    "WebSocket connections accepted and not yet closed, by consumer class.",
    ["consumer"],
    multiprocess_mode="livesum",
)
CONNECTION_ATTEMPTS = Counter(
    "tether_websocket_connection_attempts",
    "WebSocket handshakes by consumer class and outcome (accepted, refused, denied, failed, abandoned).",
    ["consumer", "outcome"],
)
CLOSES = Counter(
    "tether_websocket_closes",
    "Accepted WebSocket connections that ended, by consumer class and close code (application codes by range).",
    ["consumer", "code"],
)
MESSAGES_RECEIVED = Counter(
    "tether_messages_received",
    "Messages handed to consumers, by consumer class and kind (text, binary: client frames; layer: layer events).",
    ["consumer", "kind"],
)
MESSAGES_SENT = Counter(
    "tether_messages_sent",
    "WebSocket frames consumers sent, by consumer class and kind (text, binary).",
    ["consumer", "kind"],
)
HANDLER_SECONDS = Histogram(
    "tether_handler_duration_seconds",
    "Time consumers' handlers took, by consumer class and message kind.",
    ["consumer", "kind"],
    buckets=DURATION_BUCKETS,
)
LAYER_SECONDS = Histogram(
    "tether_layer_operation_duration_seconds",
    "Time channel layer calls took (send, group_send, group_add, group_discard), by layer alias and operation.",
    ["alias", "operation"],
    buckets=DURATION_BUCKETS,
)
LAYER_ERRORS = Counter(
    "tether_layer_errors",
    "Channel layer calls (send, group_send, group_add, group_discard) that raised, by alias, operation and exception.",
    ["alias", "operation", "error"],
)
LAYER_DROPS = Counter(
    "tether_layer_dropped_messages",
    "Messages a channel layer did not deliver (its stats() counters), by layer alias and reason.",
    ["alias", "reason"],
)
CONNECTION_DROPS = Counter(
    "tether_connection_dropped_messages",
    "Messages a connection did not pass on: to a slow client (dropped, conflated, discarded at a slow-client close, "
    "tether.outbound) or from a client over a rate limit (tether.ratelimit), by reason.",
    ["reason"],
)
PRESENCE_CONNECTIONS = Gauge(
    "tether_presence_connections",
    "Connections present in presence groups (tether.presence), by layer alias: each process counts its own joins.",
    ["alias"],
    multiprocess_mode="livesum",
)
PRESENCE_EVENTS = Counter(
    "tether_presence_events",
    "Presence joins and leaves announced, by layer alias and event (join, leave).",
    ["alias", "event"],
)
STREAM_PUBLISHED = Counter(
    "tether_stream_messages_published",
    "Messages published to streams (tether.streams), by layer alias.",
    ["alias"],
)
STREAM_RECOVERIES = Counter(
    "tether_stream_recoveries",
    "Stream recoveries answered, by layer alias and outcome (complete, or the reload reason: epoch, trimmed, future).",
    ["alias", "outcome"],
)
LOOP_LAG = Histogram(
    "tether_event_loop_lag_seconds",
    "How much later than asked the event loop ran a periodic probe (every 0.5 s per loop).",
    buckets=LAG_BUCKETS,
)


def _add_observations(child: Any, histogram: _Histogram, previous: list[float]) -> None:
    """Add what ``histogram`` observed since ``previous`` (its counts, then its sum) to a prometheus_client child.

    prometheus_client has no public call that adds many observations at once, so this writes to the child's bucket
    and sum values (``_buckets``, ``_sum``: the objects ``observe`` itself increments, one per bucket, not cumulative)
    in this one place; tests/metrics checks the result through the exposition format, so a change in
    prometheus_client fails there.
    """
    buckets = child._buckets
    for index, count in enumerate(histogram.counts):
        delta = count - previous[index]
        if delta:
            buckets[index].inc(delta)
            previous[index] = count
    total_delta = histogram.total - previous[-1]
    if total_delta:
        child._sum.inc(total_delta)
        previous[-1] = histogram.total


class Exporter:
    """Copies what a ``Tally`` counted since the last flush, and what each layer's ``stats()`` counted, into the
    prometheus_client metrics; owns the thread that does it periodically."""

    def __init__(self, tally: Tally, layers: Any, interval: float = 1.0) -> None:
        self.tally = tally
        self._layers = layers  # the ChannelLayerManager: its ``backends`` are the layers this process built
        self.interval = interval
        self._flushed: dict[tuple[Any, Any], Any] = {}
        self._layer_stats: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
        # What each presence tracker and streams object had counted at the last flush, by metric and labels.
        self._owned: weakref.WeakKeyDictionary[Any, dict[tuple[Any, Any], Any]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the flushing thread (a daemon, so it never holds the process up) and the flush at exit."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tether-metrics-flush", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the thread, flush once more, and in multiprocess mode remove this process's live gauge files."""
        atexit.unregister(self.stop)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join(timeout=5)
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.flush()
            except Exception:
                logger.exception("Copying tether's counts to prometheus_client failed; retrying in %ss.", self.interval)

    def flush(self) -> None:
        """Copy the counts made since the last flush into the prometheus_client metrics.

        It runs in the exporter's thread while the event loop keeps counting: every dict is copied with ``list()``
        (one step for the interpreter) before it is read, so a key added meanwhile waits for the next flush.
        """
        with self._lock:
            tally = self.tally
            for consumer, counts in list(tally.consumers.items()):
                OPEN_CONNECTIONS.labels(consumer).set(counts.open)
                self._counters(
                    CONNECTION_ATTEMPTS, {(consumer, outcome): n for outcome, n in list(counts.attempts.items())}
                )
                self._counters(CLOSES, {(consumer, code): n for code, n in list(counts.closes.items())})
                handlers = {(consumer, kind): histogram for kind, histogram in list(counts.handlers.items())}
                received = {labels: handlers[labels].handled for labels in handlers if labels[1] in RECEIVED_KINDS}
                self._counters(MESSAGES_RECEIVED, received)
                self._counters(
                    MESSAGES_SENT, {(consumer, "text"): counts.sent_text, (consumer, "binary"): counts.sent_binary}
                )
                self._histograms(HANDLER_SECONDS, handlers)
            self._counters(LAYER_ERRORS, tally.layer_errors)
            self._histograms(LAYER_SECONDS, tally.layer_seconds)
            self._histograms(LOOP_LAG, {(): tally.loop_lag})
            self._drops()
            self._connection_drops()
            self._presence_and_streams()

    def _connection_drops(self) -> None:
        """Add the slow-client and rate-limit counts of this process (``tether.outbound``, ``tether.ratelimit``)."""
        from tether.outbound import snapshot
        from tether.ratelimit import counters

        slow = snapshot()
        refused = sum(count for name, count in counters().items() if name != "store_errors")
        self._counters(
            CONNECTION_DROPS,
            {
                ("slow_client",): slow.get("messages_dropped", 0) + slow.get("messages_discarded", 0),
                ("conflated",): slow.get("messages_conflated", 0),
                ("rate_limited",): refused,
            },
        )

    def _presence_and_streams(self) -> None:
        """Add what each layer's presence tracker and streams counted, for the layers that have made them.

        Counted since the last flush per tracker, not per alias: a layer built again for an alias (settings changed)
        has a new tracker counting from zero, whose counts would otherwise be held back until they passed the old's.
        """
        from tether.presence.base import existing_presence
        from tether.streams.base import existing_streams

        for alias, layer in list(self._layers.backends.items()):
            presence = existing_presence(layer)
            if presence is not None:
                stats = presence.stats()
                PRESENCE_CONNECTIONS.labels(alias).set(stats["connections"])
                flushed = self._owned.setdefault(presence, {})
                joins_and_leaves = {(alias, "join"): stats["joined"], (alias, "leave"): stats["left"]}
                self._counters(PRESENCE_EVENTS, joins_and_leaves, flushed)
            streams = existing_streams(layer)
            if streams is not None:
                kept = streams.stats()
                flushed = self._owned.setdefault(streams, {})
                self._counters(STREAM_PUBLISHED, {(alias,): kept["published"]}, flushed)
                recoveries = {(alias, outcome): n for outcome, n in kept["recoveries"].items()}
                self._counters(STREAM_RECOVERIES, recoveries, flushed)

    def _counters(
        self, metric: Counter, counts: dict[Any, int], flushed: dict[tuple[Any, Any], Any] | None = None
    ) -> None:
        """Add to ``metric`` what ``counts`` (labels -> count since it started) grew by since the counts in
        ``flushed`` (by default the exporter's own, for the counts of this process)."""
        if flushed is None:
            flushed = self._flushed
        for labels, count in list(counts.items()):
            key = (metric, labels)
            delta = count - flushed.get(key, 0)
            if delta > 0:
                metric.labels(*labels).inc(delta)
                flushed[key] = count

    def _histograms(self, metric: Histogram, histograms: dict[Any, _Histogram]) -> None:
        for labels, histogram in list(histograms.items()):
            key = (metric, labels)
            previous = self._flushed.get(key)
            if previous is None:
                previous = self._flushed[key] = [0.0] * (len(histogram.counts) + 1)
            _add_observations(metric.labels(*labels) if labels else metric, histogram, previous)

    def _drops(self) -> None:
        """Add what each layer's ``stats()`` counted as dropped since the last flush (a layer whose counters were
        reset, by ``flush()``, starts again from zero)."""
        for alias, layer in list(self._layers.backends.items()):
            stats = getattr(layer, "stats", None)
            if stats is None:
                continue
            current = stats()
            previous = self._layer_stats.get(layer, {})
            for key, reason in DROP_REASONS.items():
                count = current.get(key, 0)
                before = previous.get(key, 0)
                delta = count - before if count >= before else count
                if delta > 0:
                    LAYER_DROPS.labels(alias, reason).inc(delta)
            self._layer_stats[layer] = current


def render() -> bytes:
    """The exposition text of every metric: this process's, or with ``PROMETHEUS_MULTIPROC_DIR``, all processes'."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
