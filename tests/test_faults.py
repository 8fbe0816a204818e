"""Fault injection, end to end: replay venue → relay process → real nats-server.

Everything is real: the relay is a subprocess (``python -m relay run``), nats-server is the
``nats_server`` fixture (killed with SIGKILL and restarted on the same port and store), the
venue is :class:`~relay.replay.ReplayVenue` on loopback sockets, and the slow path to
JetStream is a real TCP proxy (:class:`~tests.fault_support.SlowProxy`). The feed is the real
Binance capture looped with its ids shifted (:func:`~tests.fault_support.binance_feed`), so
every event is distinct; what the stream must hold is counted from the frames the venue
actually sent, by Binance's documented fields.

1. nats-server SIGKILLed and restarted ten times while trades stream: every trade stored
   once, none lost, none duplicated.
2. The venue drops every connection every few seconds, and once cuts a REST snapshot in the
   middle of its body: every book resyncs, and what JetStream holds is a valid chain per
   symbol that never crosses and never has a delta before its snapshot.
3. The venue stalls (socket open, pings answered, no data): the relay reconnects within
   ``stall_timeout_secs`` plus slack and says why in its log.
4. JetStream slow to acknowledge (a proxy delaying server → client) with a small outage
   buffer: every trade stored, tickers conflated and counted, memory bounded.
5. Two relays on one feed into one stream: every event stored exactly once, the other copy
   acknowledged as a duplicate.
6. JetStream slow as in 4, with book diffs too and live REST snapshots: book deltas that do
   not fit are dropped and their books rebuilt from fresh snapshots; what JetStream holds is
   a valid chain per symbol (no delta whose predecessor is missing, never crossed, ending on
   the feed's final book), and every trade is still stored.

Each test prints its figures (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import random
import signal
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from relay.captures import Recording
from relay.natsd import NatsServer, free_port
from relay.replay import ReplayVenue
from tests.e2e_support import relay_process
from tests.fault_support import (
    DATA_STREAMS,
    STATUS_STREAM,
    SYMBOLS,
    Book,
    LiveBooks,
    SlowProxy,
    binance_feed,
    log_lines,
    metric_by_label,
    metric_samples,
    metric_sum,
    read_stream,
    recorded_snapshots,
    rss_mb,
    sent_events,
    settled,
    walk_book_chain,
    write_config,
)
from tests.jetstream import StoredMessage, stream_counts

_decode = msgspec.json.decode


async def wait_until(check: Callable[[], object], timeout: float) -> bool:
    """Poll ``check()`` (sync or async) until truthy; False after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while True:
            result = check()
            if hasattr(result, "__await__"):
                result = await result  # type: ignore[misc]
            if result:
                return True
            await trio.sleep(0.05)
    return False


async def stop(proc: trio.Process, log: Path) -> None:
    """SIGTERM the relay; it must drain and exit 0."""
    assert proc.returncode is None, f"the relay died:\n{log.read_text()[-3000:]}"
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        code = await proc.wait()
    assert code == 0, f"exit {code}:\n{log.read_text()[-3000:]}"


def bodies(messages: list[StoredMessage]) -> list[dict[str, Any]]:
    return [_decode(m.data) for m in messages]


def feed_texts(feed: Recording) -> list[str]:
    return [frame.text for frame in feed.received]


def duplicates(messages: list[StoredMessage]) -> int:
    """Stored messages beyond the first with each Nats-Msg-Id."""
    return len(messages) - len({m.msg_id for m in messages})


# ---------------------------------------------------------------------------------------------
# 1. nats-server killed and restarted

OUTAGES = 10
OUTAGE_SECS = (0.5, 2.5)  # the issue allows up to 10 s; this keeps CI time sane
UP_SECS = 1.0


async def test_nats_sigkill_and_restart_ten_times_loses_and_duplicates_no_trade(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats = nats_server
    rng = random.Random(1009)
    outages = [round(rng.uniform(*OUTAGE_SECS), 2) for _ in range(OUTAGES)]
    # The feed outlasts the outages (each restart takes some time too) by a few seconds.
    seconds = sum(outages) + OUTAGES * (UP_SECS + 0.5) + 6
    feed = binance_feed(rate=600, seconds=seconds, trades_per_pass=120)
    venue = ReplayVenue(feed, pace="recorded")
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "relay.log"
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        config = write_config(
            tmp_path / "relay.toml",
            nats_url=nats.url,
            ws_url=venue.ws_url,
            rest_url=venue.rest_url,
            http_port=http_port,
        )
        async with relay_process(config, log) as proc, httpx.AsyncClient() as http:

            async def trades_stored() -> bool:
                return (await stream_counts(nats.url, ["MARKET_TRADES"]))["MARKET_TRADES"] > 0

            assert await wait_until(trades_stored, 30), log.read_text()[-3000:]
            began = trio.current_time()
            for outage in outages:
                await trio.to_thread.run_sync(nats.kill)
                await trio.sleep(outage)
                await trio.to_thread.run_sync(nats.start)
                await trio.sleep(UP_SECS)
            faults_took = trio.current_time() - began
            assert proc.returncode is None, log.read_text()[-3000:]
            total = len(feed.received)
            assert await wait_until(lambda: venue.position == total, 60), (
                f"the feed did not finish: {venue.position}/{total}"
            )
            with trio.fail_after(60):
                health = await settled(http, base, frames=lambda: venue.frames_sent)
            metrics = (await http.get(f"{base}/metrics")).text
            await stop(proc, log)
        nursery.cancel_scope.cancel()

    sent = sent_events(venue.frames_played())
    stored = {name: await read_stream(nats.url, name) for name in DATA_STREAMS}
    trades = {(b["native_symbol"], b["trade_id"]) for b in bodies(stored["MARKET_TRADES"])}
    dups = {name: duplicates(messages) for name, messages in stored.items()}
    retries = metric_sum(metrics, "relay_publish_retries_total")
    drops = metric_by_label(metrics, "relay_dropped_messages_total", "type")
    print(
        f"\noutages: {len(outages)} (SIGKILL + restart, {sum(outages):.1f} s down in "
        f"{faults_took:.1f} s: {outages})\n"
        f"frames sent: {venue.frames_sent} on {venue.connections} connection(s)\n"
        f"trades sent: {len(sent.trades)}, stored: {len(stored['MARKET_TRADES'])} "
        f"({len(trades)} distinct)\n"
        f"stored per stream: { {n: len(m) for n, m in stored.items()} }, duplicates: {dups}\n"
        f"relay_publish_retries_total: {retries:.0f}\n"
        f"relay_dropped_messages_total by type: {drops}\n"
        f"backlog at the end: {health['nats']['backlog']}"
    )
    assert len(sent.trades) > 2000
    assert trades == sent.trades
    assert len(stored["MARKET_TRADES"]) == len(sent.trades)
    assert dups == dict.fromkeys(DATA_STREAMS, 0)
    assert drops.get("trade", 0) == 0


# ---------------------------------------------------------------------------------------------
# 2. The venue drops its connections

ROUTINE = {"connected", "disconnected", "book_synced"}


async def test_dropped_connections_and_a_cut_snapshot_resync_every_book(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats = nats_server
    feed = binance_feed(rate=800, seconds=15, trades_per_pass=10)
    total = len(feed.received)
    books = LiveBooks(feed, lambda: venue.position)
    venue = ReplayVenue(feed, pace="recorded", live=True, drop_every=2.5, rest_responder=books)
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "relay.log"
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        config = write_config(
            tmp_path / "relay.toml",
            nats_url=nats.url,
            ws_url=venue.ws_url,
            rest_url=venue.rest_url,
            http_port=http_port,
        )
        async with relay_process(config, log) as proc, httpx.AsyncClient() as http:
            assert await wait_until(lambda: venue.drops >= 1, 30), log.read_text()[-3000:]
            # The snapshots the relay asks for after this drop: the first one is cut mid-body.
            venue.cut_responses = 1
            assert await wait_until(lambda: venue.position == total, 40)
            drops_during_feed = venue.drops
            with trio.fail_after(30):
                await settled(http, base)
            metrics = (await http.get(f"{base}/metrics")).text
            await stop(proc, log)
        nursery.cancel_scope.cancel()

    diffs_by_u = {
        symbol: {d["u"]: d for d in diffs}
        for symbol, diffs in sent_events(feed_texts(feed)).diffs.items()
    }
    stored = await read_stream(nats.url, "MARKET_BOOKS")
    statuses = bodies(await read_stream(nats.url, STATUS_STREAM))
    kinds = Counter(s["kind"] for s in statuses)
    per_symbol: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies(stored):
        per_symbol[body["native_symbol"]].append(body)

    figures: dict[str, dict[str, int]] = {}
    for symbol in SYMBOLS:
        chain = walk_book_chain(
            symbol, per_symbol[symbol], books.served[symbol], diffs_by_u[symbol]
        )
        counts = chain.counts
        synced = sum(s["kind"] == "book_synced" and s["native_symbol"] == symbol for s in statuses)
        figures[symbol] = {
            "snapshots": counts["l2_snapshot"],
            "deltas": counts["l2_delta"],
            "book_synced": synced,
            "snapshots served": len(books.served[symbol]),
        }

    gaps = metric_sum(metrics, "relay_book_gaps_total", venue="binance")
    resyncs = metric_sum(metrics, "relay_book_resyncs_total", venue="binance")
    stale = metric_sum(metrics, "relay_stale_deltas_dropped_total", venue="binance")
    reconnects = metric_sum(metrics, "relay_reconnects_total", venue="binance")
    snapshot_requests = metric_by_label(metrics, "relay_snapshot_requests_total", "outcome")
    unusual = [(s["kind"], s["detail"]) for s in statuses if s["kind"] not in ROUTINE]
    print(
        f"\nconnections: {venue.connections}, dropped by the venue: {venue.drops} "
        f"({drops_during_feed} while the feed played), REST responses cut: {venue.cuts}\n"
        f"frames sent: {venue.frames_sent} of a {total}-frame live feed\n"
        f"per symbol: {figures}\n"
        f"relay_book_gaps_total: {gaps:.0f}, relay_book_resyncs_total: {resyncs:.0f}, "
        f"relay_stale_deltas_dropped_total: {stale:.0f}, relay_reconnects_total: "
        f"{reconnects:.0f}, relay_snapshot_requests_total: {snapshot_requests}\n"
        f"status events: {dict(kinds)}\n"
        f"other statuses: {unusual}"
    )
    assert drops_during_feed >= 4
    assert venue.cuts == 1
    assert snapshot_requests.get("error", 0) == venue.cuts
    assert reconnects >= drops_during_feed
    # Every drop while the feed played is followed by a fresh snapshot of every book (the
    # last drop may come before its resync is done).
    for symbol, f in figures.items():
        assert f["snapshots"] >= drops_during_feed, (symbol, f)
    # The counters count what the status stream says happened.
    assert resyncs >= 1  # the cut snapshot
    assert resyncs == kinds["book_resync"]
    assert gaps == kinds["book_gap"]
    assert duplicates(stored) == 0


# ---------------------------------------------------------------------------------------------
# 3. A stalled venue

STALL_TIMEOUT = 2.0
STALL_SLACK = 3.0


async def test_a_stalled_connection_is_reopened_within_the_stall_timeout(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    feed = binance_feed(rate=300, seconds=30, trades_per_pass=20)
    venue = ReplayVenue(feed, pace="recorded", stall_after=1.5)
    http_port = free_port()
    log = tmp_path / "relay.log"
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        config = write_config(
            tmp_path / "relay.toml",
            nats_url=nats_server.url,
            ws_url=venue.ws_url,
            rest_url=venue.rest_url,
            http_port=http_port,
            venue=f"[venues.liveness]\nstall_timeout_secs = {STALL_TIMEOUT}",
        )
        async with relay_process(config, log) as proc:
            assert await wait_until(lambda: venue.stalled_at, 30), log.read_text()[-3000:]
            reopened = await wait_until(
                lambda: venue.connections >= 2, STALL_TIMEOUT + STALL_SLACK + 5
            )
            await stop(proc, log)
        nursery.cancel_scope.cancel()

    stalled = venue.stalled_at[0]
    after = venue.connected_at[1] - stalled if reopened else None
    lines = log_lines(log)
    reasons = [
        line
        for line in lines
        if line.get("venue") == "binance" and line.get("event") == "venue connection stalled"
    ]
    statuses = bodies(await read_stream(nats_server.url, STATUS_STREAM))
    print(
        f"\nstall_timeout_secs: {STALL_TIMEOUT}, slack: {STALL_SLACK} s, the venue stalls "
        f"each connection 1.5 s into its playback\n"
        f"connections: {venue.connections}, frames sent: {venue.frames_sent}\n"
        f"second connection {after if after is None else round(after, 2)} s after the stall\n"
        f"log lines naming the stall: {reasons[:3]}\n"
        f"status events: {Counter(s['kind'] for s in statuses)}"
    )
    assert after is not None, "the relay never reopened the stalled connection"
    assert STALL_TIMEOUT - 0.5 <= after <= STALL_TIMEOUT + STALL_SLACK
    assert reasons, "the relay's log does not say the connection stalled"


# ---------------------------------------------------------------------------------------------
# 4. Slow JetStream

ACK_DELAY = 0.2
PUBLISH_WINDOW = 64
OUTAGE_BUFFER = 256 * 1024
RSS_LIMIT_MB = 300.0


async def test_slow_jetstream_conflates_tickers_keeps_every_trade_and_bounds_memory(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats = nats_server
    # ~840 tickers/s and ~160 trades/s, against at most PUBLISH_WINDOW / ACK_DELAY = 320
    # PubAcks/s through the proxy: the outage buffer fills within seconds.
    feed = binance_feed(rate=1000, seconds=12, trades_per_pass=16, books=False)
    total = len(feed.received)
    venue = ReplayVenue(feed, pace="recorded")
    proxy = SlowProxy(nats.port, down_delay=ACK_DELAY)
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "relay.log"
    peak_rss = 0.0
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        await nursery.start(proxy.serve)
        config = write_config(
            tmp_path / "relay.toml",
            nats_url=proxy.url,
            ws_url=venue.ws_url,
            rest_url=venue.rest_url,
            http_port=http_port,
            data_types=("trade", "ticker"),
            nats=f"publish_window = {PUBLISH_WINDOW}",
            pipeline=f"outage_buffer_bytes = {OUTAGE_BUFFER}",
        )
        async with relay_process(config, log) as proc, httpx.AsyncClient() as http:

            async def sample_rss() -> None:
                nonlocal peak_rss
                while True:
                    try:
                        peak_rss = max(peak_rss, rss_mb(proc.pid))
                    except OSError:
                        return
                    await trio.sleep(0.2)

            nursery.start_soon(sample_rss)
            began = trio.current_time()
            assert await wait_until(lambda: venue.position == total, 90), (
                f"the feed did not finish: {venue.position}/{total}\n{log.read_text()[-3000:]}"
            )
            with trio.fail_after(60):
                await settled(http, base, frames=lambda: venue.frames_sent)
            took = trio.current_time() - began
            metrics = (await http.get(f"{base}/metrics")).text
            await stop(proc, log)
        nursery.cancel_scope.cancel()

    sent = sent_events(venue.frames_played())
    trades = await read_stream(nats.url, "MARKET_TRADES")
    tickers = await read_stream(nats.url, "MARKET_TICKERS")
    stored_trades = {(b["native_symbol"], b["trade_id"]) for b in bodies(trades)}
    ticker_bodies = bodies(tickers)
    last_stored = {b["native_symbol"]: b["sequence"] for b in ticker_bodies}
    conflated = metric_sum(
        metrics, "relay_dropped_messages_total", type="ticker", reason="conflated"
    )
    ticker_drops = metric_sum(metrics, "relay_dropped_messages_total", type="ticker")
    trade_drops = metric_sum(metrics, "relay_dropped_messages_total", type="trade")
    drops = {
        (s.labels["type"], s.labels["reason"]): s.value
        for s in metric_samples(metrics, "relay_dropped_messages_total")
    }
    print(
        f"\nproxy: PubAcks delayed {ACK_DELAY} s, publish_window {PUBLISH_WINDOW}, "
        f"outage_buffer_bytes {OUTAGE_BUFFER}; {proxy.bytes_up} bytes up, "
        f"{proxy.bytes_down} down\n"
        f"feed: {total} frames in {took:.1f} s (paced for {total / 1000:.0f} s)\n"
        f"trades sent: {len(sent.trades)}, stored: {len(trades)}\n"
        f"tickers sent: {len(sent.tickers)}, stored: {len(tickers)}, dropped: {ticker_drops:.0f} "
        f"(conflated: {conflated:.0f})\n"
        f"relay_dropped_messages_total: {drops}\n"
        f"relay peak RSS: {peak_rss:.1f} MB (limit {RSS_LIMIT_MB:.0f} MB)"
    )
    assert stored_trades == sent.trades
    assert len(trades) == len(sent.trades)
    assert trade_drops == 0
    assert conflated > 0
    assert len(tickers) < len(sent.tickers)
    # Every ticker is either stored or counted as dropped, and the newest one always stays.
    assert len(tickers) + ticker_drops == len(sent.tickers)
    assert duplicates(tickers) == 0
    assert last_stored == sent.last_ticker
    assert 0 < peak_rss < RSS_LIMIT_MB


# ---------------------------------------------------------------------------------------------
# 5. Two relays on one feed


async def test_two_relays_on_one_feed_store_every_event_exactly_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats = nats_server
    feed = binance_feed(rate=2000, seconds=5, trades_per_pass=40)
    total = len(feed.received)
    sent = sent_events(feed_texts(feed))
    want = {
        "MARKET_TRADES": len(sent.trades),
        "MARKET_TICKERS": len(sent.tickers),
        "MARKET_BOOKS": sent.book_messages(recorded_snapshots(feed)),
    }
    events = sum(want.values())
    # Every connection gets the whole feed: both relays see every event.
    venue = ReplayVenue(feed, pace="recorded")
    ports = [free_port(), free_port()]
    logs = [tmp_path / "relay-a.log", tmp_path / "relay-b.log"]
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        configs = [
            write_config(
                tmp_path / f"relay-{name}.toml",
                nats_url=nats.url,
                ws_url=venue.ws_url,
                rest_url=venue.rest_url,
                http_port=port,
                name=f"relay-{name}",
            )
            for name, port in zip("ab", ports, strict=True)
        ]
        async with (
            relay_process(configs[0], logs[0]) as a,
            relay_process(configs[1], logs[1]) as b,
            httpx.AsyncClient() as http,
        ):
            assert await wait_until(lambda: venue.frames_sent >= 2 * total, 60), (
                f"{venue.frames_sent} of {2 * total} frames sent; {venue.connections} connections"
            )
            metrics = []
            for port in ports:
                with trio.fail_after(30):
                    await settled(http, f"http://127.0.0.1:{port}", frames=lambda: total)
            for port in ports:
                metrics.append((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
            for proc, log in ((a, logs[0]), (b, logs[1])):
                await stop(proc, log)
        nursery.cancel_scope.cancel()

    stored = {name: await read_stream(nats.url, name) for name in DATA_STREAMS}
    counts = {name: len(messages) for name, messages in stored.items()}
    distinct = {name: len({m.msg_id for m in messages}) for name, messages in stored.items()}
    status_stored = len(await read_stream(nats.url, STATUS_STREAM))
    dups = [
        metric_sum(text, "relay_published_duplicates_total", venue="binance") for text in metrics
    ]
    published = [
        metric_sum(text, "relay_published_messages_total", venue="binance") for text in metrics
    ]
    retries = [metric_sum(text, "relay_publish_retries_total") for text in metrics]
    trades = {(b["native_symbol"], b["trade_id"]) for b in bodies(stored["MARKET_TRADES"])}
    tickers = {(b["native_symbol"], b["sequence"]) for b in bodies(stored["MARKET_TICKERS"])}
    print(
        f"\nfeed: {total} frames, played to each of {venue.connections} connections\n"
        f"events sent: {want} = {events}\n"
        f"stored: {counts}, distinct ids: {distinct}, status messages: {status_stored}\n"
        f"relay_published_messages_total a/b: {published}, "
        f"relay_published_duplicates_total a/b: {dups} (sum {sum(dups):.0f}), "
        f"retries a/b: {retries}"
    )
    assert counts == want
    assert distinct == want
    assert trades == sent.trades
    assert tickers == sent.tickers
    assert sum(dups) == events
    assert sum(published) >= events  # the data events once, plus each relay's own statuses


# ---------------------------------------------------------------------------------------------
# 6. Slow JetStream with books

BOOKS_FEED_SECS = 10


async def test_slow_jetstream_with_books_drops_deltas_resyncs_books_and_keeps_every_trade(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats = nats_server
    # Per second ~640 depth diffs, ~300 tickers and ~57 trades, against at most
    # PUBLISH_WINDOW / ACK_DELAY = 320 PubAcks/s through the proxy: the outage buffer fills
    # within a second, and the book deltas that no longer fit are dropped.
    feed = binance_feed(rate=1000, seconds=BOOKS_FEED_SECS, trades_per_pass=16)
    total = len(feed.received)
    books = LiveBooks(feed, lambda: venue.position)
    venue = ReplayVenue(feed, pace="recorded", live=True, rest_responder=books)
    proxy = SlowProxy(nats.port, down_delay=ACK_DELAY)
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "relay.log"
    peak_buffer = 0.0
    peak_rss = 0.0
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        await nursery.start(proxy.serve)
        config = write_config(
            tmp_path / "relay.toml",
            nats_url=proxy.url,
            ws_url=venue.ws_url,
            rest_url=venue.rest_url,
            http_port=http_port,
            nats=f"publish_window = {PUBLISH_WINDOW}",
            pipeline=f"outage_buffer_bytes = {OUTAGE_BUFFER}",
        )
        async with relay_process(config, log) as proc, httpx.AsyncClient() as http:

            async def sample_memory() -> None:
                nonlocal peak_buffer, peak_rss
                while True:
                    try:
                        peak_rss = max(peak_rss, rss_mb(proc.pid))
                    except OSError:
                        return
                    with contextlib.suppress(httpx.HTTPError):  # the sidecar may not be up
                        text = (await http.get(f"{base}/metrics")).text
                        buffered = metric_sum(text, "relay_outage_buffer_bytes")
                        peak_buffer = max(peak_buffer, buffered)
                    await trio.sleep(0.25)

            nursery.start_soon(sample_memory)
            began = trio.current_time()

            def feed_done() -> bool:
                # Live: the feed's clock runs on while the trades' backpressure holds the
                # relay's reader back; the venue then sends what it fell behind on back to
                # back. (A reconnect would lose what was due meanwhile: then the clock says.)
                sent_all = venue.frames_sent >= total or venue.connections > 1
                return venue.position == total and sent_all

            assert await wait_until(feed_done, 90), (
                f"the feed did not finish: {venue.frames_sent}/{total}\n{log.read_text()[-3000:]}"
            )
            with trio.fail_after(60):
                await settled(http, base, frames=lambda: venue.frames_sent)
            took = trio.current_time() - began
            metrics = (await http.get(f"{base}/metrics")).text
            await stop(proc, log)
        nursery.cancel_scope.cancel()

    sent = sent_events(venue.frames_played())
    feed_diffs = sent_events(feed_texts(feed)).diffs
    diffs_by_u = {symbol: {d["u"]: d for d in diffs} for symbol, diffs in feed_diffs.items()}
    trades = await read_stream(nats.url, "MARKET_TRADES")
    stored_books = await read_stream(nats.url, "MARKET_BOOKS")
    statuses = bodies(await read_stream(nats.url, STATUS_STREAM))
    stored_trades = {(b["native_symbol"], b["trade_id"]) for b in bodies(trades)}
    per_symbol: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies(stored_books):
        per_symbol[body["native_symbol"]].append(body)
    # The books the relay was asked to rebuild because the outage buffer dropped a delta.
    overflowed = Counter(
        s["native_symbol"]
        for s in statuses
        if s["kind"] == "book_resync" and "outage buffer full" in s["detail"]
    )

    # The book each symbol ends with on the venue: the recorded snapshot and every diff.
    final_books: dict[str, tuple[Book, int]] = {}
    for h in feed.http:
        if "/api/v3/depth" in h.url:
            snapshot = _decode(h.body)
            symbol = h.url.split("symbol=")[1].split("&")[0]
            book = Book(snapshot["bids"], snapshot["asks"])
            last_id = snapshot["lastUpdateId"]
            for diff in feed_diffs[symbol]:
                if diff["u"] > last_id:
                    book.apply(diff["b"], diff["a"])
                    last_id = diff["u"]
            final_books[symbol] = (book, last_id)

    figures: dict[str, dict[str, int]] = {}
    for symbol in SYMBOLS:
        chain = walk_book_chain(
            symbol, per_symbol[symbol], books.served[symbol], diffs_by_u[symbol]
        )
        counts, skipped, last, rebuilt = chain.counts, chain.skipped, chain.last, chain.book
        final, final_id = final_books[symbol]
        figures[symbol] = {
            "snapshots": counts["l2_snapshot"],
            "deltas": counts["l2_delta"],
            "diffs skipped by a snapshot": skipped,
            "overflow resyncs asked": overflowed[symbol],
            "snapshots served": len(books.served[symbol]),
        }
        # Whatever was dropped on the way, the stored book ends where the venue's does.
        assert (last, rebuilt.levels()) == (final_id, final.levels()), (
            f"{symbol}: the stored book ends at {last}, the venue's at {final_id}"
        )

    drops = {
        (s.labels["type"], s.labels["reason"]): s.value
        for s in metric_samples(metrics, "relay_dropped_messages_total")
    }
    overflow = drops.get(("l2_orderbook", "overflow"), 0)
    resync_drops = drops.get(("l2_orderbook", "resync"), 0)
    trade_drops = metric_sum(metrics, "relay_dropped_messages_total", type="trade")
    resync_requests = metric_sum(metrics, "relay_resync_requests_total", venue="binance")
    snapshot_requests = metric_by_label(metrics, "relay_snapshot_requests_total", "outcome")
    book_resyncs = metric_sum(metrics, "relay_book_resyncs_total", venue="binance")
    gaps = metric_sum(metrics, "relay_book_gaps_total", venue="binance")
    stale = metric_sum(metrics, "relay_stale_deltas_dropped_total", venue="binance")
    served = sum(len(s) for s in books.served.values())
    diffs_sent = sum(map(len, sent.diffs.values()))
    deltas_stored = sum(f["deltas"] for f in figures.values())
    kinds = Counter(s["kind"] for s in statuses)
    print(
        f"\nproxy: PubAcks delayed {ACK_DELAY} s, publish_window {PUBLISH_WINDOW}, "
        f"outage_buffer_bytes {OUTAGE_BUFFER} (peak sampled {peak_buffer:.0f}); "
        f"{proxy.bytes_up} bytes up, {proxy.bytes_down} down\n"
        f"feed: {total} frames in {took:.1f} s (paced for {total / 1000:.0f} s), "
        f"{venue.frames_sent} sent on {venue.connections} connection(s)\n"
        f"trades sent: {len(sent.trades)}, stored: {len(trades)}\n"
        f"depth diffs sent: {diffs_sent}, deltas stored: {deltas_stored}, "
        f"relay_stale_deltas_dropped_total: {stale:.0f}\n"
        f"book messages stored: {len(stored_books)}; per symbol: {figures}\n"
        f"relay_dropped_messages_total: {drops}\n"
        f"relay_resync_requests_total: {resync_requests:.0f}, "
        f"relay_snapshot_requests_total: {snapshot_requests}, REST snapshots served: "
        f"{served}, relay_book_resyncs_total: {book_resyncs:.0f}, "
        f"relay_book_gaps_total: {gaps:.0f}\n"
        f"status events: {dict(kinds)}\n"
        f"relay peak RSS: {peak_rss:.1f} MB (limit {RSS_LIMIT_MB:.0f} MB)"
    )
    assert venue.connections == 1, "the relay reconnected"
    # Trades: backpressure, never dropped.
    assert stored_trades == sent.trades
    assert len(trades) == len(sent.trades)
    assert trade_drops == 0
    # Book deltas that did not fit were dropped, and so were the later ones of their books
    # until a fresh snapshot came.
    assert overflow > 0
    assert resync_drops > 0
    assert resync_requests >= sum(overflowed.values()) > 0
    # Each overflow asked the venue for a snapshot: more than the first one per book.
    assert snapshot_requests.get("ok", 0) >= len(SYMBOLS) + len(overflowed)
    assert served >= len(SYMBOLS) + len(overflowed)
    for symbol in overflowed:
        assert len(books.served[symbol]) >= 2, (symbol, figures[symbol])
        assert figures[symbol]["snapshots"] >= 2, (symbol, figures[symbol])
    holes = {symbol for symbol, f in figures.items() if f["diffs skipped by a snapshot"]}
    assert holes and holes <= set(overflowed), (holes, overflowed)
    assert gaps == 0  # the venue never skipped a diff: every resync was the buffer's doing
    # Every diff sent is stored as a delta, or counted: dropped by the outage buffer, or by
    # the codec as older than the snapshot that stood in for it.
    assert deltas_stored + overflow + resync_drops + stale == diffs_sent
    assert duplicates(trades) == 0
    assert duplicates(stored_books) == 0
    assert 0 < peak_rss < RSS_LIMIT_MB
