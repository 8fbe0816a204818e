"""End to end: replay venue → relay process → real nats-server with JetStream.

The relay runs as a real subprocess (``python -m relay run``), so signals, exit codes and the
sidecar are the real ones. Expectations are counted from the capture itself.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import trio

from adapters.binance import ADAPTER
from relay.captures import HttpResponse, load
from relay.natsd import NatsServer, free_port
from relay.replay import ReplayVenue
from relay.wire import symbol_token
from tests.e2e_support import eventually, metric, relay_process
from tests.jetstream import stream_counts, stream_messages

CAPTURE = Path(__file__).parent / "data" / "cryptofeed" / "BINANCE.ws.1.0"
SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
DATA_STREAMS = ["MARKET_TRADES", "MARKET_TICKERS", "MARKET_BOOKS"]


def expected_from_capture() -> dict[str, object]:
    """What the stream must hold, counted from the raw capture by the documented rules."""
    rec = load(CAPTURE)
    last_update_id = {
        url.split("symbol=")[1].split("&")[0]: json.loads(body)["lastUpdateId"]
        for url, body in ((h.url, h.body) for h in rec.http)
    }
    tickers, trades = [], []
    deltas: dict[str, list[dict]] = defaultdict(list)
    for frame in rec.received:
        msg = json.loads(frame.text)
        stream, data = msg["stream"], msg["data"]
        if stream.endswith("@bookTicker"):
            tickers.append(data)
        elif stream.endswith("@aggTrade"):
            trades.append(data)
        elif stream.endswith("@depth@100ms") and data["u"] > last_update_id[data["s"]]:
            deltas[data["s"]].append(data)
    return {"tickers": tickers, "trades": trades, "deltas": deltas, "snapshots": last_update_id}


def write_config(
    path: Path, nats_url: str, venue: ReplayVenue, http_port: int, service: str = ""
) -> Path:
    path.write_text(
        f"""
[service]
name = "relay-e2e"
log_level = "info"
log_format = "json"
shutdown_timeout_ms = 5000
{service}

[nats]
urls = ["{nats_url}"]

[[nats.streams]]
name = "MARKET_TRADES"
subjects = ["market.*.*.trade"]

[[nats.streams]]
name = "MARKET_TICKERS"
subjects = ["market.*.*.ticker"]

[[nats.streams]]
name = "MARKET_BOOKS"
subjects = ["market.*.*.l2_orderbook"]

[[nats.streams]]
name = "MARKET_STATUS"
subjects = ["market.*._status"]

[http]
bind = "127.0.0.1"
port = {http_port}

[[venues]]
id = "binance"
adapter = "binance"

[venues.connection]
ws_url = "{venue.ws_url}"
rest_url = "{venue.rest_url}"

[[venues.subscriptions]]
instruments = {json.dumps(SYMBOLS)}
data_types = ["trade", "ticker", "l2_orderbook"]

# Configured without its API keys: reported as disabled, and nothing else minds.
[[venues]]
id = "alpaca"
adapter = "alpaca"

[[venues.subscriptions]]
instruments = ["BTC/USD"]
data_types = ["trade"]
"""
    )
    return path


async def data_counts(url: str) -> dict[str, int]:
    return await stream_counts(url, DATA_STREAMS)


async def test_replay_to_jetstream_exactly_once(nats_server: NatsServer, tmp_path: Path) -> None:
    nats = nats_server
    expected = expected_from_capture()
    n_deltas = sum(len(d) for d in expected["deltas"].values())  # type: ignore[union-attr]
    want = {
        "MARKET_TRADES": len(expected["trades"]),  # type: ignore[arg-type]
        "MARKET_TICKERS": len(expected["tickers"]),  # type: ignore[arg-type]
        "MARKET_BOOKS": len(SYMBOLS) + n_deltas,
    }
    venue = ReplayVenue(load(CAPTURE), pace="fast")
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        config = write_config(tmp_path / "relay.toml", nats.url, venue, http_port)
        log = tmp_path / "relay.log"
        async with relay_process(config, log) as proc, httpx.AsyncClient() as http:

            async def all_stored() -> bool:
                return await data_counts(nats.url) == want

            await eventually(all_stored)

            ready = await http.get(f"{base}/readyz")
            assert ready.status_code == 200, ready.text
            health = await http.get(f"{base}/health")
            assert health.status_code == 200, health.text
            alpaca = health.json()["venues"]["alpaca"]
            assert alpaca["state"] == "disabled: no credentials (key_id, secret_key)"
            binance = health.json()["venues"]["binance"]
            assert binance["state"] == "streaming"
            assert binance["frames"] == len(load(CAPTURE).received)
            assert health.json()["nats"]["connected"] is True
            metrics = (await http.get(f"{base}/metrics")).text
            assert (
                f'relay_frames_received_total{{venue="binance"}} {len(load(CAPTURE).received)}.0'
                in metrics
            )
            stored_total = sum(want.values())
            published = metric(metrics, 'relay_published_messages_total{venue="binance"}')
            status_stored = (await stream_counts(nats.url, ["MARKET_STATUS"]))["MARKET_STATUS"]
            assert published == stored_total + status_stored
            assert metric(metrics, "relay_publish_in_flight") == 0
            # Diffs older than their book's snapshot are dropped by the sync rules, and counted.
            depth_frames = sum("@depth" in f.text for f in load(CAPTURE).received)
            stale = metric(metrics, 'relay_stale_deltas_dropped_total{venue="binance"}')
            assert stale == depth_frames - n_deltas > 0

            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await proc.wait() == 0, log.read_text()[-3000:]

        await check_stream_contents(nats.url, expected)

        # The same frames again, through a fresh relay process: JetStream stores nothing new.
        async with relay_process(config, log) as proc:

            async def replayed_twice() -> bool:
                return venue.connections >= 2 and venue.frames_sent >= 2 * len(
                    load(CAPTURE).received
                )

            await eventually(replayed_twice)
            async with httpx.AsyncClient() as http:

                async def duplicates_acked() -> bool:
                    text = (await http.get(f"{base}/metrics")).text
                    dups = metric(text, 'relay_published_duplicates_total{venue="binance"}')
                    return dups == stored_total

                await eventually(duplicates_acked)
            assert await data_counts(nats.url) == want
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await proc.wait() == 0
        nursery.cancel_scope.cancel()


async def check_stream_contents(url: str, expected: dict[str, object]) -> None:
    """Subjects, ids, exact decimal strings and the per-symbol book chain."""
    trades = await stream_messages(url, "MARKET_TRADES")
    assert [json.loads(m.data)["price"] for m in trades] == [
        t["p"]
        for t in expected["trades"]  # type: ignore[attr-defined]
    ]
    tickers = await stream_messages(url, "MARKET_TICKERS")
    assert len({m.msg_id for m in tickers}) == len(tickers)
    for stored, frame in zip(tickers, expected["tickers"], strict=True):  # type: ignore[call-overload]
        body = json.loads(stored.data)
        assert stored.subject == f"market.binance.{_token(frame['s'])}.ticker"
        assert (body["bid_price"], body["bid_size"], body["ask_price"], body["ask_size"]) == (
            frame["b"],
            frame["B"],
            frame["a"],
            frame["A"],
        )
        assert body["sequence"] == frame["u"]
    books = await stream_messages(url, "MARKET_BOOKS")
    per_symbol: dict[str, list[dict]] = defaultdict(list)
    for m in books:
        body = json.loads(m.data)
        per_symbol[body["native_symbol"]].append(body)
        assert m.subject == f"market.binance.{_token(body['native_symbol'])}.l2_orderbook"
    for symbol in SYMBOLS:
        snapshot, *deltas = per_symbol[symbol]
        assert snapshot["type"] == "l2_snapshot"
        assert snapshot["sequence"] == expected["snapshots"][symbol]  # type: ignore[index]
        prev = snapshot["sequence"]
        for body, frame in zip(deltas, expected["deltas"][symbol], strict=True):  # type: ignore[index]
            assert body["type"] == "l2_delta"
            assert body["prev_sequence"] == prev
            assert (body["first_sequence"], body["sequence"]) == (frame["U"], frame["u"])
            assert body["bids"] == frame["b"] and body["asks"] == frame["a"]
            prev = body["sequence"]


async def test_sigterm_mid_stream_loses_nothing(nats_server: NatsServer, tmp_path: Path) -> None:
    """SIGTERM while frames flow: exit 0, and what was stored has no hole in any sequence."""
    nats = nats_server
    expected = expected_from_capture()
    # The capture spans ~30 s; at 6x it streams for ~5 s, and we stop after ~1.5 s.
    venue = ReplayVenue(load(CAPTURE), pace="recorded", speed=6.0)
    http_port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        config = write_config(tmp_path / "relay.toml", nats.url, venue, http_port)
        log = tmp_path / "relay.log"
        async with relay_process(config, log) as proc:

            async def some_stored() -> bool:
                return (await data_counts(nats.url))["MARKET_TICKERS"] >= 5

            await eventually(some_stored)
            await trio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await proc.wait() == 0, log.read_text()[-3000:]
        sent = venue.frames_sent
        nursery.cancel_scope.cancel()
    assert sent < len(load(CAPTURE).received), "the stream should have been cut mid-way"

    tickers = await stream_messages(nats.url, "MARKET_TICKERS")
    # Frames arrive in order and are published in order: a lost message would leave a hole.
    want = expected["tickers"][: len(tickers)]  # type: ignore[index]
    assert [json.loads(m.data)["sequence"] for m in tickers] == [t["u"] for t in want]
    books = await stream_messages(nats.url, "MARKET_BOOKS")
    prev: dict[str, int] = {}
    for m in books:
        body = json.loads(m.data)
        symbol = body["native_symbol"]
        if body["type"] == "l2_snapshot":
            prev[symbol] = body["sequence"]
        else:
            assert body["prev_sequence"] == prev[symbol], f"hole in {symbol} before {body}"
            prev[symbol] = body["sequence"]
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "relay stopped" for line in lines)


def _token(native: str) -> str:
    canonical = ADAPTER.canonical_symbol(native)
    assert canonical is not None
    return symbol_token(canonical)


def exchange_info(listed: dict[str, tuple[str, str]]) -> str:
    """An ``exchangeInfo`` body listing ``listed`` (symbol -> base, quote), in the shape of
    the documented fixture tests/data/binance/instruments_spot.json."""
    fixture = json.loads((Path(__file__).parent / "data/binance/instruments_spot.json").read_text())
    template = fixture["symbols"][0]
    fixture["symbols"] = [
        {**template, "symbol": symbol, "baseAsset": base, "quoteAsset": quote}
        for symbol, (base, quote) in listed.items()
    ]
    return json.dumps(fixture)


async def test_symbols_the_venue_does_not_list_are_reported_not_subscribed(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """RUNEEUR is not listed at start: reported, never subscribed. LRCBTC is delisted by the
    first refresh: reported. The cached list then fails ``relay check``, offline or not."""
    recording = load(CAPTURE)
    listed = {"NKNUSDT": ("NKN", "USDT"), "BLZETH": ("BLZ", "ETH"), "LRCBTC": ("LRC", "BTC")}
    url = "https://api.binance.com/api/v3/exchangeInfo"
    recording.http.append(HttpResponse(0, url, exchange_info(listed)))
    del listed["LRCBTC"]
    recording.http.append(HttpResponse(1, url, exchange_info(listed)))  # every later answer
    venue = ReplayVenue(recording, pace="fast")
    http_port = free_port()
    state_dir = tmp_path / "state"
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        config = write_config(
            tmp_path / "relay.toml",
            nats_server.url,
            venue,
            http_port,
            service=f'state_dir = "{state_dir}"\ninstruments_refresh_secs = 1',
        )
        async with relay_process(config, tmp_path / "relay.log") as proc:
            async with httpx.AsyncClient() as http:

                async def lrcbtc_delisted() -> bool:
                    try:
                        response = await http.get(f"http://127.0.0.1:{http_port}/health")
                    except httpx.ConnectError:
                        return False  # not listening yet
                    binance = response.json()["venues"].get("binance", {})
                    return binance.get("unknown_symbols") == ["RUNEEUR", "LRCBTC"]

                await eventually(lrcbtc_delisted)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await proc.wait() == 0

        offline = await trio.run_process(
            [sys.executable, "-m", "relay", "check", "-c", str(config)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        fetched = await trio.run_process(
            [sys.executable, "-m", "relay", "check", "-c", str(config), "--fetch"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        nursery.cancel_scope.cancel()

    books = await stream_messages(nats_server.url, "MARKET_BOOKS")
    assert {json.loads(m.data)["native_symbol"] for m in books} == {"NKNUSDT", "BLZETH", "LRCBTC"}
    statuses = [json.loads(m.data) for m in await stream_messages(nats_server.url, "MARKET_STATUS")]
    unknown = [(s["native_symbol"], s["detail"]) for s in statuses if s["kind"] == "unknown_symbol"]
    assert unknown == [
        ("RUNEEUR", "not listed by the venue"),
        ("LRCBTC", "no longer listed by the venue"),
    ]
    assert not [s for s in statuses if s["kind"] == "venue_error"]

    for result in (offline, fetched):
        assert result.returncode == 2, result.stderr
        assert "instruments verified against its list of 2" in result.stdout.decode()
        errors = result.stderr.decode().splitlines()
        assert errors == [
            f"relay: {config}: venues[0].subscriptions: {native!r} is not listed (or not "
            "trading) on binance"
            for native in ("LRCBTC", "RUNEEUR")
        ]
