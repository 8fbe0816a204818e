"""Prometheus metrics of one relay process.

Each :class:`Metrics` owns its registry, so two relays in one process (tests) never share
counts. Names are ``relay_*`` with their unit; every drop, gap, resync, reconnect and
checksum failure has a counter here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.codec import CodecCounters

CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}

# What the codecs count themselves (CodecCounters field -> metric name, help), read when
# Prometheus scrapes: the per-frame path never touches a metric for them.
_CODEC_COUNTERS = {
    "parse_errors": ("relay_parse_errors", "Frames a codec could not decode"),
    "book_gaps": ("relay_book_gaps", "Book sequence gaps detected"),
    "book_resyncs": ("relay_book_resyncs", "Book resyncs started (fresh snapshot)"),
    "checksum_failures": ("relay_checksum_failures", "Book checksum mismatches"),
    "stale_deltas_dropped": (
        "relay_stale_deltas_dropped",
        "Book updates dropped as older than the book: before its snapshot, or repeated",
    ),
}


class _CodecCounterCollector(Collector):
    def __init__(self) -> None:
        self.counters: dict[str, list[CodecCounters]] = {}

    def collect(self) -> Iterator[Metric]:
        for field, (name, documentation) in _CODEC_COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=["venue"])
            for venue, counters in self.counters.items():
                family.add_metric([venue], sum(getattr(c, field) for c in counters))
            yield family


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._codec_counters = _CodecCounterCollector()
        r.register(self._codec_counters)
        self.frames_received = Counter(
            "relay_frames_received", "WebSocket frames read from venues", ["venue"], registry=r
        )
        self.events = Counter(
            "relay_events", "Normalized events produced by codecs", ["venue", "type"], registry=r
        )
        self.reconnects = Counter(
            "relay_reconnects", "Venue connections re-opened", ["venue"], registry=r
        )
        self.stale_streams = Gauge(
            "relay_stale_streams",
            "Streams (symbol, data type) of a venue silent beyond their learned threshold",
            ["venue"],
            registry=r,
        )
        self.resync_requests = Counter(
            "relay_resync_requests",
            "Book resyncs asked for from downstream (before coalescing)",
            ["venue"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "relay_circuit_state",
            "Venue circuit breaker: 0 closed, 1 half-open, 2 open",
            ["venue"],
            registry=r,
        )
        self.snapshot_requests = Counter(
            "relay_snapshot_requests",
            "REST snapshot requests by outcome",
            ["venue", "outcome"],
            registry=r,
        )
        self.dropped = Counter(
            "relay_dropped_messages",
            "Messages dropped before storage, by data type and reason",
            ["type", "reason"],
            registry=r,
        )
        self.published = Counter(
            "relay_published_messages",
            "Messages JetStream acknowledged as newly stored",
            ["venue"],
            registry=r,
        )
        self.duplicates = Counter(
            "relay_published_duplicates",
            "Messages JetStream acknowledged as duplicates (already stored)",
            ["venue"],
            registry=r,
        )
        self.publish_retries = Counter(
            "relay_publish_retries", "Publishes retried after an ack timeout or error", registry=r
        )
        self.publish_errors = Counter(
            "relay_publish_errors", "Negative or failed PubAcks, by reason", ["reason"], registry=r
        )
        self.puback_latency = Histogram(
            "relay_puback_latency_seconds",
            "Frame received to PubAck",
            # Fine from 0.25 ms to 5 ms, where a healthy relay lives, and wide enough above to
            # tell a slow NATS from an overloaded relay.
            buckets=(
                0.00025,
                0.0005,
                0.00075,
                0.001,
                0.0015,
                0.002,
                0.003,
                0.004,
                0.005,
                0.0075,
                0.01,
                0.015,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
            ),
            registry=r,
        )
        self.publish_in_flight = Gauge(
            "relay_publish_in_flight", "Messages published and awaiting a PubAck", registry=r
        )
        self.channel_depth = Gauge(
            "relay_channel_depth", "Items waiting in a bounded channel", ["channel"], registry=r
        )
        self.nats_connected = Gauge("relay_nats_connected", "1 while connected to NATS", registry=r)
        self.outage_buffer_bytes = Gauge(
            "relay_outage_buffer_bytes",
            "Payload bytes waiting in the outage buffer in front of the publisher",
            registry=r,
        )

    def add_codec_counters(self, venue: str, counters: Sequence[CodecCounters]) -> None:
        """Export these codecs' own counts (parse errors, gaps, resyncs, checksum failures,
        stale updates) under ``venue``."""
        self._codec_counters.counters.setdefault(venue, []).extend(counters)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
