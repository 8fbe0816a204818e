"""Staleness of a venue's streams: which (symbol, data type) has gone quiet for too long.

:class:`LivenessTracker` is sans-IO and clock-injected, like the codecs: the shell hands it
every batch of events it emits with the monotonic time of the batch (:meth:`observe`), and
once a second asks which streams became stale and which recovered (:meth:`check`).

What counts as "too long" is learned per stream, so an illiquid symbol is not declared dead
for being illiquid: the threshold is ``stale_after_intervals`` times the stream's typical
gap between events, kept within ``[stale_min_secs, stale_max_secs]`` (``stale_max_secs``
until :data:`MIN_SAMPLES` gaps have been seen).

Cost: :meth:`observe` runs for every event (20k+ a second), so it only stores the batch
time under event class and symbol in a dict of what arrived since the last check. Gaps
are derived at :meth:`check`: a stream's gap sample is the time between its last events
seen at two consecutive checks, which is the exact gap for a stream slower than the
checks and about one check interval for a busier one (whose threshold is then at least
``stale_after_intervals`` check intervals: 10 s with the defaults, the default
``stale_min_secs`` anyway). The typical gap follows the samples up quickly and down
slowly (:data:`ALPHA_UP`, :data:`ALPHA_DOWN`): a high percentile of the recent gaps rather
than their mean, so the long pauses between the bursts of a bursty stream (liquidations)
set its threshold, not the short gaps inside a burst.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from relay.config import LivenessConfig
from relay.events import DATA_TYPE_OF, DataType, Event

MIN_SAMPLES: Final = 3
"""Gap samples a stream needs before its own threshold replaces ``stale_max_secs``."""
ALPHA_UP: Final = 0.25
"""Weight of a gap sample longer than the typical gap."""
ALPHA_DOWN: Final = 0.05
"""Weight of a gap sample shorter than the typical gap."""

StreamKey = tuple[str, DataType]
"""(canonical symbol, data type)."""


@dataclass(frozen=True, slots=True)
class StreamChange:
    """A stream that became stale, or recovered, at a :meth:`LivenessTracker.check`."""

    symbol: str
    data_type: DataType
    silent_secs: float
    """Stale: how long it has been silent. Recovered: how long the silence that ended was."""
    threshold_secs: float
    """The stream's staleness threshold at the time."""

    @property
    def name(self) -> str:
        """``BTC-USDT/trade``."""
        return f"{self.symbol}/{self.data_type}"


class _Stream:
    __slots__ = ("gap_ok", "last_ns", "samples", "stale", "typical")

    def __init__(self, last_ns: int) -> None:
        self.last_ns = last_ns
        """The stream's latest event time seen by a check."""
        self.gap_ok = True
        """Whether the gap from ``last_ns`` to the next event is a sample (no outage since)."""
        self.typical = 0.0
        """The typical gap between events, seconds."""
        self.samples = 0
        self.stale = False


class LivenessTracker:
    """The staleness of every stream of one connection (or one venue)."""

    __slots__ = ("_intervals", "_max", "_min", "_pending", "_resumed_ns", "_streams")

    def __init__(
        self, stale_after_intervals: float, stale_min_secs: float, stale_max_secs: float
    ) -> None:
        if not 0 < stale_min_secs <= stale_max_secs:
            raise ValueError("need 0 < stale_min_secs <= stale_max_secs")
        self._intervals = stale_after_intervals
        self._min = stale_min_secs
        self._max = stale_max_secs
        self._pending: defaultdict[type[Event], dict[str, int]] = defaultdict(dict)
        """Latest batch time by event class and symbol since the last check."""
        self._streams: dict[StreamKey, _Stream] = {}
        self._resumed_ns = 0

    @classmethod
    def from_config(cls, config: LivenessConfig) -> LivenessTracker:
        return cls(config.stale_after_intervals, config.stale_min_secs, config.stale_max_secs)

    def observe(self, events: Iterable[Event], now_ns: int) -> None:
        """These events were emitted at monotonic time ``now_ns``. Status events are ignored
        (at :meth:`check`; here every event costs one dict store)."""
        pending = self._pending
        for event in events:
            pending[type(event)][event.symbol] = now_ns

    def resume(self, now_ns: int) -> None:
        """The feed was interrupted (the connection was down) until about ``now_ns``: the
        silence of every stream counts from now, and no gap spanning the outage is learned.
        Streams reported stale stay stale until they deliver again."""
        self._resumed_ns = now_ns
        for stream in self._streams.values():
            stream.gap_ok = False

    def check(self, now_ns: int) -> tuple[list[StreamChange], list[StreamChange]]:
        """The streams that became stale since the last check, and those that recovered
        (delivered again after being reported stale)."""
        pending, self._pending = self._pending, defaultdict(dict)
        latest: dict[StreamKey, int] = {}
        for cls, seen in pending.items():
            data_type = DATA_TYPE_OF.get(cls)
            if data_type is None:
                continue
            for symbol, seen_ns in seen.items():
                key = (symbol, data_type)
                if seen_ns > latest.get(key, -1):
                    latest[key] = seen_ns
        streams = self._streams
        recovered: list[StreamChange] = []
        for key, seen_ns in latest.items():
            stream = streams.get(key)
            if stream is None:
                streams[key] = _Stream(seen_ns)
                continue
            if seen_ns <= stream.last_ns:
                continue
            silence = (seen_ns - max(stream.last_ns, self._resumed_ns)) / 1e9
            if stream.stale:
                stream.stale = False
                recovered.append(StreamChange(*key, silence, self._threshold(stream)))
            if stream.gap_ok:
                self._learn(stream, (seen_ns - stream.last_ns) / 1e9)
            stream.last_ns = seen_ns
            stream.gap_ok = True
        became: list[StreamChange] = []
        for key, stream in streams.items():
            if stream.stale:
                continue
            silence = (now_ns - max(stream.last_ns, self._resumed_ns)) / 1e9
            threshold = self._threshold(stream)
            if silence > threshold:
                stream.stale = True
                became.append(StreamChange(*key, silence, threshold))
        return became, recovered

    def stale(self) -> list[str]:
        """The streams now stale, as ``symbol/type``, sorted."""
        return sorted(f"{s}/{t}" for (s, t), stream in self._streams.items() if stream.stale)

    def threshold_secs(self, symbol: str, data_type: DataType) -> float:
        """The current staleness threshold of a stream (``stale_max_secs`` if unknown)."""
        stream = self._streams.get((symbol, data_type))
        return self._max if stream is None else self._threshold(stream)

    def _threshold(self, stream: _Stream) -> float:
        if stream.samples < MIN_SAMPLES:
            return self._max
        return min(max(self._intervals * stream.typical, self._min), self._max)

    @staticmethod
    def _learn(stream: _Stream, gap: float) -> None:
        if stream.samples == 0:
            stream.typical = gap
        else:
            alpha = ALPHA_UP if gap > stream.typical else ALPHA_DOWN
            stream.typical += alpha * (gap - stream.typical)
        stream.samples += 1
