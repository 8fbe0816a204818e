"""``service.workers``: a parent relay process sharding venues over worker processes.

The end-to-end test runs the real thing: a nats-server, two replay venues on loopback, and
``python -m relay run`` with ``workers = 2`` as a subprocess (which starts its two workers).
The others check the pieces that need no processes (the plan, the config key, the metrics
merge) and that N publishers provisioning the same streams at once all succeed.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
import trio
from nats.js.api import StorageType, StreamConfig
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from relay.captures import load
from relay.config import ConfigError, load_config, plan_text
from relay.metrics import Metrics
from relay.natsd import NatsServer, free_port
from relay.overload import OutageBuffer
from relay.publisher import Publisher
from relay.replay import ReplayVenue
from relay.workers import exposition, merge_metrics, shard
from tests.e2e_support import eventually, relay_process
from tests.jetstream import stream_counts, stream_messages

CAPTURE = Path(__file__).parent / "data" / "cryptofeed" / "BINANCE.ws.1.0"
VENUES = {"bin-a": ["NKNUSDT", "BLZETH"], "bin-b": ["LRCBTC", "RUNEEUR"]}
DATA_STREAMS = {
    "MARKET_TRADES": "trade",
    "MARKET_TICKERS": "ticker",
    "MARKET_BOOKS": "l2_orderbook",
}


def expected_counts() -> dict[str, dict[str, int]]:
    """Messages each symbol must store, per data type, counted from the raw capture by the
    documented rules (as tests/test_e2e.py does): every aggTrade and bookTicker frame; the
    depth snapshot and each depth diff past it."""
    rec = load(CAPTURE)
    last_update_id = {
        h.url.split("symbol=")[1].split("&")[0]: json.loads(h.body)["lastUpdateId"]
        for h in rec.http
    }
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for symbol in last_update_id:
        counts[symbol]["l2_orderbook"] += 1  # the snapshot
    for frame in rec.received:
        msg = json.loads(frame.text)
        stream, data = msg["stream"], msg["data"]
        if stream.endswith("@bookTicker"):
            counts[data["s"]]["ticker"] += 1
        elif stream.endswith("@aggTrade"):
            counts[data["s"]]["trade"] += 1
        elif stream.endswith("@depth@100ms") and data["u"] > last_update_id[data["s"]]:
            counts[data["s"]]["l2_orderbook"] += 1
    return counts


def write_config(
    path: Path, nats_url: str, venues: dict[str, ReplayVenue], http_port: int, state: Path
) -> Path:
    entries = "".join(
        f"""
[[venues]]
id = "{venue_id}"
adapter = "binance"

[venues.connection]
ws_url = "{venue.ws_url}"
rest_url = "{venue.rest_url}"

[[venues.subscriptions]]
instruments = {json.dumps(VENUES[venue_id])}
data_types = ["trade", "ticker", "l2_orderbook"]
"""
        for venue_id, venue in venues.items()
    )
    streams = "".join(
        f'\n[[nats.streams]]\nname = "{name}"\nsubjects = ["market.*.*.{kind}"]\n'
        for name, kind in {**DATA_STREAMS, "MARKET_STATUS": "_status"}.items()
    ).replace("market.*.*._status", "market.*._status")
    path.write_text(
        f"""
[service]
name = "relay-workers"
log_level = "info"
shutdown_timeout_ms = 3000
state_dir = "{state}"
workers = 2

[nats]
urls = ["{nats_url}"]
{streams}
[http]
bind = "127.0.0.1"
port = {http_port}
{entries}"""
    )
    return path


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels``; ``None`` if absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return s.value
    return None


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


async def test_two_workers_shard_restart_and_stop(nats_server: NatsServer, tmp_path: Path) -> None:
    counts = expected_counts()
    want = {
        stream: sum(counts[s][kind] for symbols in VENUES.values() for s in symbols)
        for stream, kind in DATA_STREAMS.items()
    }
    data_of = {
        venue_id: sum(sum(counts[s].values()) for s in symbols)
        for venue_id, symbols in VENUES.items()
    }
    frames = len(load(CAPTURE).received)
    venues = {venue_id: ReplayVenue(load(CAPTURE), pace="fast") for venue_id in VENUES}
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "relay.log"
    async with trio.open_nursery() as nursery:
        for venue in venues.values():
            await nursery.start(venue.serve)
        config = write_config(
            tmp_path / "relay.toml", nats_server.url, venues, http_port, tmp_path / "state"
        )
        async with relay_process(config, log) as proc, httpx.AsyncClient() as http:

            async def all_stored() -> bool:
                return await stream_counts(nats_server.url, list(DATA_STREAMS)) == want

            await eventually(all_stored, timeout=40)

            async def healthy() -> dict:
                try:
                    response = await http.get(f"{base}/health")
                except httpx.TransportError:
                    return {}
                return response.json() if response.status_code == 200 else {}

            await eventually(healthy)
            health = await healthy()
            assert health["status"] == "ok" and health["ready"] is True
            workers = health["workers"]
            assert set(workers) == {"0", "1"}
            assert workers["0"]["venues"] == ["bin-a"] and workers["1"]["venues"] == ["bin-b"]
            pids = {k: w["pid"] for k, w in workers.items()}
            assert len({proc.pid, *pids.values()}) == 3
            for pid in pids.values():
                assert alive(pid) and parent_pid(pid) == proc.pid
            assert health["venues"]["bin-a"]["worker"] == 0
            assert health["venues"]["bin-b"]["worker"] == 1
            assert {v["state"] for v in health["venues"].values()} == {"streaming"}
            assert health["nats"]["connected"] is True
            assert (await http.get(f"{base}/readyz")).status_code == 200
            assert (await http.get(f"{base}/livez")).status_code == 200

            text = (await http.get(f"{base}/metrics")).text
            for worker, venue_id in (("0", "bin-a"), ("1", "bin-b")):
                name = "relay_frames_received_total"
                assert sample(text, name, worker=worker, venue=venue_id) == frames
                # A venue lives in one worker only.
                other = "1" if worker == "0" else "0"
                assert sample(text, name, worker=other, venue=venue_id) is None
                assert sample(text, "relay_worker_restarts_total", worker=worker) == 0
                assert sample(text, "relay_worker_up", worker=worker) == 1

            # Stored exactly once: the counts above, and no id twice.
            for stream, kind in DATA_STREAMS.items():
                stored = await stream_messages(nats_server.url, stream)
                assert len({m.msg_id for m in stored}) == len(stored) == want[stream]
                per_venue = Counter(m.subject.split(".")[1] for m in stored)
                assert per_venue == {
                    v: sum(counts[s][kind] for s in symbols) for v, symbols in VENUES.items()
                }

            # kill -9 worker 1: the parent starts it again, and it runs bin-b again.
            os.kill(pids["1"], signal.SIGKILL)

            async def restarted() -> bool:
                doc = await healthy()
                worker = doc.get("workers", {}).get("1", {})
                return worker.get("restarts") == 1 and worker.get("pid") not in (None, pids["1"])

            await eventually(restarted, timeout=30)
            health = await healthy()
            assert health["workers"]["0"]["pid"] == pids["0"]  # the other one ran on
            assert health["workers"]["0"]["restarts"] == 0
            assert venues["bin-b"].connections == 2 and venues["bin-a"].connections == 1

            async def replayed_into_jetstream() -> bool:
                text = (await http.get(f"{base}/metrics")).text
                name = "relay_published_duplicates_total"
                return sample(text, name, worker="1", venue="bin-b") == data_of["bin-b"]

            # The new worker read the venue's frames again and JetStream acknowledged each
            # of its messages, as duplicates: data flows, and nothing is stored twice.
            await eventually(replayed_into_jetstream, timeout=30)
            text = (await http.get(f"{base}/metrics")).text
            assert sample(text, "relay_worker_restarts_total", worker="1") == 1
            assert sample(text, "relay_worker_restarts_total", worker="0") == 0
            assert await stream_counts(nats_server.url, list(DATA_STREAMS)) == want
            new_pid = health["workers"]["1"]["pid"]
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
            assert any(x.get("event") == "worker exited; restarting it" for x in lines)

            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await proc.wait() == 0, log.read_text()[-3000:]
        nursery.cancel_scope.cancel()

    assert not alive(pids["0"]) and not alive(new_pid)
    assert processes_mentioning(str(config)) == []
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    stopped = [x for x in lines if x.get("event") == "relay worker stopped"]
    assert sorted(x["worker"] for x in stopped) == [0, 1]  # both drained and exited


async def test_concurrent_provisioning_by_many_workers(nats_server: NatsServer) -> None:
    """N workers provision the same streams at once, on a fresh server (creates) and again
    with a changed stream (updates): every one of them succeeds."""

    async def provision_all(streams: list[StreamConfig], n: int = 6) -> None:
        publishers = [
            Publisher(
                {"servers": [nats_server.url]},
                streams,
                [],
                window=16,
                ack_timeout=1.0,
                retry_schedule=[0.1],
                metrics=Metrics(),
                shutdown_timeout=1.0,
            )
            for _ in range(n)
        ]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for publisher in publishers:
                    nursery.start_soon(_provision, publisher)
        assert all(p.provisioned for p in publishers)

    names = ["MARKET_TRADES", "MARKET_TICKERS", "MARKET_BOOKS", "MARKET_STATUS"]
    streams = [
        StreamConfig(name=name, subjects=[f"market.*.x{i}.>"], storage=StorageType.FILE)
        for i, name in enumerate(names)
    ]
    await provision_all(streams)
    changed = [StreamConfig(**{**s.as_dict(), "max_age": 3600.0}) for s in streams]
    await provision_all(changed)
    assert await stream_counts(nats_server.url, names) == dict.fromkeys(names, 0)


async def _provision(publisher: Publisher) -> None:
    """Run ``publisher`` with no input: it connects, provisions and returns (or raises)."""
    source = OutageBuffer(1 << 16, {}, Metrics(), _no_resync)
    source.close()
    await publisher.run(source)


def _no_resync(venue: str, symbol: str, reason: str) -> None:
    raise AssertionError("no message, no resync")


def _config(tmp_path: Path, service: str, venues: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(f"[service]\n{service}\n{venues}")
    return path


def _venue(venue_id: str, symbols: list[str], types: str = '"trade"', extra: str = "") -> str:
    return (
        f'\n[[venues]]\nid = "{venue_id}"\nadapter = "binance"\n{extra}\n'
        f"[[venues.subscriptions]]\ninstruments = {json.dumps(symbols)}\n"
        f"data_types = [{types}]\n"
    )


def test_shard_balances_venues_by_subscriptions(tmp_path: Path) -> None:
    venues = (
        _venue("small", ["BTCUSDT"])  # 1 subscription
        + _venue("big", ["BTCUSDT", "ETHUSDT", "BNBUSDT"], '"trade", "ticker"')  # 6
        + _venue("off", ["BTCUSDT"] * 1, extra="enabled = false")
        + _venue("mid", ["BTCUSDT", "ETHUSDT"], '"trade", "ticker"')  # 4
        + _venue("tiny", ["ETHUSDT"])  # 1
        + '\n[[venues]]\nid = "keys"\nadapter = "alpaca"\n'  # no credentials: weighs 0
        + '[[venues.subscriptions]]\ninstruments = ["BTC/USD"]\ndata_types = ["trade"]\n'
    )
    config = load_config(_config(tmp_path, "workers = 2", venues))
    # Heaviest first onto the least loaded: big -> 0, mid -> 1, small -> 1, tiny -> 1 (5 < 6),
    # keys (0) -> 0. Config order within each worker; the disabled venue nowhere.
    assert shard(config, 2) == [["big", "keys"], ["small", "mid", "tiny"]]
    # Equal weights: round robin.
    equal = "".join(_venue(f"v{i}", ["BTCUSDT"]) for i in range(5))
    config = load_config(_config(tmp_path, "workers = 3", equal))
    assert shard(config, 3) == [["v0", "v3"], ["v1", "v4"], ["v2"]]
    # Never more workers than venues, never an empty worker.
    assert shard(config, 8) == [["v0"], ["v1"], ["v2"], ["v3"], ["v4"]]
    assert shard(config, 1) == [["v0", "v1", "v2", "v3", "v4"]]


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "expected int >= 1, got 0"), ("65", "expected int <= 64, got 65")],
)
def test_workers_key_is_validated(tmp_path: Path, value: str, message: str) -> None:
    path = _config(tmp_path, f"workers = {value}", _venue("a", ["BTCUSDT"]))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: service.workers: {message}"


def test_workers_default_and_plan(tmp_path: Path) -> None:
    one = load_config(_config(tmp_path, "", _venue("a", ["BTCUSDT"])))
    assert one.service.workers == 1
    assert "worker" not in plan_text(one).splitlines()[0]
    two = load_config(_config(tmp_path, "workers = 2", _venue("a", ["BTCUSDT"])))
    assert plan_text(two).splitlines()[0].endswith(", 2 worker processes")


def test_merged_metrics_label_every_sample_with_its_worker() -> None:
    texts = {}
    for worker, venue in (("0", "a"), ("1", "b")):
        metrics = Metrics()
        metrics.frames_received.labels(venue).inc(7 if worker == "0" else 9)
        metrics.puback_latency.observe(0.002)
        metrics.nats_connected.set(1)
        texts[worker] = metrics.exposition().decode()
    families = {f.name: f for f in merge_metrics(texts)}
    frames = families["relay_frames_received"]
    assert frames.type == "counter"
    assert {(s.labels["worker"], s.labels["venue"], s.value) for s in frames.samples} == {
        ("0", "a", 7.0),
        ("1", "b", 9.0),
    }
    own = CollectorRegistry()
    text = exposition({**texts, "2": "this is { not prometheus"}, own).decode()
    # One HELP/TYPE per family however many workers, and the text parses back.
    assert text.count("# TYPE relay_frames_received_total counter") == 1
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    buckets = [
        s for s in parsed["relay_puback_latency_seconds"].samples if s.name.endswith("_count")
    ]
    assert sorted((s.labels["worker"], s.value) for s in buckets) == [("0", 1.0), ("1", 1.0)]
    connected = parsed["relay_nats_connected"].samples
    assert sorted(s.labels["worker"] for s in connected) == ["0", "1"]  # worker 2 left out
