"""The staleness tracker alone: pure, on a simulated clock."""

from __future__ import annotations

import pytest

from relay.events import BookDelta, BookSnapshot, DataType, Event, Trade, VenueStatus
from relay.liveness import MIN_SAMPLES, LivenessTracker

S = 1_000_000_000  # ns per second
TRADE = DataType.TRADE


def trade(symbol: str) -> Trade:
    return Trade(
        venue="v",
        symbol=symbol,
        native_symbol=symbol,
        ts_venue=None,
        ts_recv=0,
        trade_id="1",
        price="1",
        size="1",
        side="buy",
    )


class Feed:
    """Drives a tracker: events at given times, a check every ``check_every`` seconds."""

    def __init__(self, tracker: LivenessTracker, check_every: float = 1.0) -> None:
        self.tracker = tracker
        self.check_every = check_every
        self.now = 0.0
        self.next_check = check_every
        self.stale: list[tuple[float, str]] = []
        self.fresh: list[tuple[float, str, float]] = []

    def advance(self, until: float, events_at: dict[float, list[Event]] | None = None) -> None:
        """Run the clock to ``until``, feeding ``events_at`` and checking on the way."""
        pending = sorted((events_at or {}).items())
        while True:
            t_event = pending[0][0] if pending else float("inf")
            t = min(t_event, self.next_check)
            if t > until:
                break
            self.now = t
            if t == t_event:
                self.tracker.observe(pending.pop(0)[1], round(t * S))
            else:
                became, recovered = self.tracker.check(round(t * S))
                self.stale += [(t, c.name) for c in became]
                self.fresh += [(t, c.name, c.silent_secs) for c in recovered]
                self.next_check += self.check_every
        self.now = until


def every(symbol: str, gap: float, start: float, end: float) -> dict[float, list[Event]]:
    n = round((end - start) / gap)
    return {round(start + i * gap, 6): [trade(symbol)] for i in range(n + 1)}


def test_a_liquid_and_an_illiquid_stream_learn_their_own_thresholds() -> None:
    tracker = LivenessTracker(stale_after_intervals=10, stale_min_secs=5, stale_max_secs=300)
    feed = Feed(tracker)
    events = every("LIQUID", 0.01, 0.0, 120.0)
    for t, batch in every("ILLIQUID", 7.0, 0.0, 120.0).items():
        events.setdefault(t, []).extend(batch)
    feed.advance(120.5, events)
    # A stream busier than the checks is sampled once a check: its gap counts as 1 s.
    assert tracker.threshold_secs("LIQUID", TRADE) == pytest.approx(10.0, rel=0.05)
    assert tracker.threshold_secs("ILLIQUID", TRADE) == pytest.approx(70.0, rel=0.01)
    assert feed.stale == []
    # Both go quiet at 120 s: each is reported once, after its own threshold.
    feed.advance(300.0)
    stale_at = dict((name, t) for t, name in feed.stale)
    assert set(stale_at) == {"LIQUID/trade", "ILLIQUID/trade"}
    assert 130.0 <= stale_at["LIQUID/trade"] <= 131.0
    assert stale_at["ILLIQUID/trade"] == 119.0 + 71.0  # the last at 119 s; 71 s > 70 s
    assert tracker.stale() == ["ILLIQUID/trade", "LIQUID/trade"]


def test_threshold_floor_and_ceiling() -> None:
    tracker = LivenessTracker(stale_after_intervals=10, stale_min_secs=15, stale_max_secs=60)
    feed = Feed(tracker)
    events = every("FAST", 0.05, 0.0, 30.0)
    for t, batch in every("RARE", 20.0, 0.0, 400.0).items():
        events.setdefault(t, []).extend(batch)
    feed.advance(400.0, events)
    assert tracker.threshold_secs("FAST", TRADE) == 15  # 10 x 1 s, raised to the floor
    assert tracker.threshold_secs("RARE", TRADE) == 60  # 10 x 20 s, capped
    assert tracker.threshold_secs("NEVER-SEEN", TRADE) == 60


def test_before_enough_gaps_the_ceiling_applies() -> None:
    tracker = LivenessTracker(stale_after_intervals=2, stale_min_secs=1, stale_max_secs=50)
    feed = Feed(tracker)
    # MIN_SAMPLES events: one gap short of a learned threshold.
    events = {float(t): [trade("X")] for t in range(0, 2 * MIN_SAMPLES, 2)}
    feed.advance(2.0 * (MIN_SAMPLES - 1) + 0.5, events)
    assert tracker.threshold_secs("X", TRADE) == 50
    feed.advance(49.0)
    assert feed.stale == []
    feed.advance(60.0)
    assert [name for _, name in feed.stale] == ["X/trade"]


def test_recovery_is_reported_once_with_the_silence_that_ended() -> None:
    tracker = LivenessTracker(stale_after_intervals=3, stale_min_secs=2, stale_max_secs=100)
    feed = Feed(tracker)
    feed.advance(20.0, every("X", 2.0, 0.0, 20.0))
    assert tracker.threshold_secs("X", TRADE) == pytest.approx(6.0)
    feed.advance(40.0)
    assert [name for _, name in feed.stale] == ["X/trade"]
    assert feed.stale[0][0] == 27.0  # silent 7 s > 6 s, at the first check after 26 s
    assert tracker.stale() == ["X/trade"]
    feed.advance(50.0, {45.5: [trade("X")]})
    assert feed.fresh == [(46.0, "X/trade", pytest.approx(25.5))]
    assert tracker.stale() == []
    assert len(feed.stale) == 1  # not reported again while it was stale
    # The long gap it just had raises its threshold quickly: a slower stream is learned.
    assert tracker.threshold_secs("X", TRADE) > 20


def test_a_bursty_stream_is_not_stale_between_its_bursts() -> None:
    # Liquidation-like: 5 s of events every 100 ms, then 55 s of nothing, over and over.
    tracker = LivenessTracker(stale_after_intervals=3, stale_min_secs=1, stale_max_secs=900)
    feed = Feed(tracker)
    events: dict[float, list[Event]] = {}
    for burst in range(30):
        events |= every("BURSTY", 0.1, burst * 60.0, burst * 60.0 + 5.0)
    feed.advance(30 * 60.0, events)
    # A new stream cannot know it is bursty: its first pauses are reported, until the
    # pauses it has seen raise its threshold above them; after that, never again.
    assert feed.stale
    assert all(t < 4 * 60.0 for t, _ in feed.stale)
    assert tracker.threshold_secs("BURSTY", TRADE) > 55


def test_status_events_are_ignored_and_book_messages_are_one_stream() -> None:
    tracker = LivenessTracker(stale_after_intervals=2, stale_min_secs=1, stale_max_secs=3)
    status = VenueStatus(
        venue="v", symbol="", native_symbol="", ts_venue=None, ts_recv=0, kind="connected"
    )
    book = {"venue": "v", "symbol": "B", "native_symbol": "b", "ts_venue": None, "ts_recv": 0}
    snapshot = BookSnapshot(**book, sequence=1, bids=[], asks=[])
    delta = BookDelta(**book, first_sequence=2, sequence=2, prev_sequence=1, bids=[], asks=[])
    tracker.observe([status, snapshot], 0)
    tracker.check(S // 2)
    tracker.observe([delta], S)
    became, _ = tracker.check(S)
    assert became == []
    became, _ = tracker.check(5 * S)
    assert [c.name for c in became] == ["B/l2_orderbook"]
    assert became[0].data_type is DataType.L2_ORDERBOOK
    assert became[0].silent_secs == pytest.approx(4.0)
    assert became[0].threshold_secs == 3


def test_an_outage_is_neither_silence_nor_a_gap() -> None:
    tracker = LivenessTracker(stale_after_intervals=3, stale_min_secs=1, stale_max_secs=100)
    feed = Feed(tracker)
    feed.advance(10.0, every("X", 1.0, 0.0, 10.0))
    threshold = tracker.threshold_secs("X", TRADE)
    assert threshold == pytest.approx(3.0)
    # The connection was down from 10 s to 500 s (the shell does not check meanwhile).
    feed.now = feed.next_check = 500.0
    tracker.resume(500 * S)
    feed.advance(502.5)
    assert feed.stale == []  # silent since the resume: 2.5 s < 3 s
    feed.advance(520.0, {503.0: [trade("X")], 504.0: [trade("X")]})
    assert tracker.threshold_secs("X", TRADE) == pytest.approx(threshold)  # no 493 s gap
    assert [t for t, _ in feed.stale] == [508.0]


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        LivenessTracker(stale_after_intervals=10, stale_min_secs=10, stale_max_secs=5)
