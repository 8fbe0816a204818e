"""The examples and the ``python -m relay.natsd`` entry point, run for real.

``relay.natsd`` runs as a subprocess against real nats-servers (the fixture's, and ones it
starts itself); the book keeping of ``examples/consumer.py`` is fed messages directly and then
through a real stream; ``examples/demo.py`` runs end to end (about 15 s).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import nats
import pytest

from relay.natsd import NatsServer, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BAD_CONFIG = Path(__file__).parent / "data" / "configs" / "bad_unknown_key.toml"


def _load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path: ``examples`` is not a package."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look the module up while building the classes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


consumer = _load_example("consumer")


# ---------------------------------------------------------------------------------------------
# python -m relay.natsd


def natsd(config: Path, store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "relay.natsd",
            "--config",
            str(config),
            "--store",
            str(store),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def nats_config(path: Path, *urls: str) -> Path:
    path.write_text(f"[nats]\nurls = {json.dumps(list(urls))}\n")
    return path


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited. Not our child, so it cannot be waited for; a zombie that
    its new parent has not reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _servers_using(store: Path) -> list[int]:
    """Pids of the nats-servers whose command line names ``store``: only ones a test started."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"nats-server") and str(store).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.fixture
def detached_store(tmp_path: Path) -> Iterator[Path]:
    """A store directory; any nats-server left running on it is stopped at teardown, even
    when the test failed before it learnt the pid."""
    store = tmp_path / "store"
    try:
        yield store
    finally:
        for pid in _servers_using(store.resolve()):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not _gone(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_natsd_leaves_an_answering_server_alone(nats_server: NatsServer, tmp_path: Path) -> None:
    # A dead URL first: any answering URL of the list will do.
    dead = f"nats://127.0.0.1:{free_port()}"
    config = nats_config(tmp_path / "relay.toml", dead, nats_server.url)
    result = natsd(config, tmp_path / "store")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"nats-server already answering at {nats_server.url}"
    assert not (tmp_path / "store").exists()


def test_natsd_starts_a_detached_jetstream_server(tmp_path: Path, detached_store: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    config = nats_config(tmp_path / "relay.toml", url)

    result = natsd(config, detached_store)

    assert result.returncode == 0, result.stderr
    match = re.fullmatch(
        r"started nats-server \(pid (\d+)\) at (\S+), store (\S+), log (\S+)",
        result.stdout.strip(),
    )
    assert match, result.stdout
    pid = int(match.group(1))
    assert match.group(2) == url
    assert Path(match.group(3)) == detached_store.resolve()
    assert Path(match.group(4)).is_file()
    # It outlived the process that started it, in a session of its own (so a Ctrl-C for
    # `relay run` in the same terminal does not stop it).
    assert not _gone(pid)
    assert os.getsid(pid) == pid

    async def jetstream_works() -> int:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="PROBE", subjects=["probe"])
            await js.publish("probe", b"x")
            return (await js.stream_info("PROBE")).state.messages
        finally:
            await nc.close()

    assert asyncio.run(jetstream_works()) == 1
    assert (detached_store / "jetstream").is_dir()

    # A second run finds it answering.
    again = natsd(config, detached_store)
    assert again.returncode == 0, again.stderr
    assert "already answering" in again.stdout


def test_natsd_reports_a_server_that_cannot_start(tmp_path: Path, detached_store: Path) -> None:
    # The port is taken by something that is no NATS server: it accepts but never greets.
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        config = nats_config(tmp_path / "relay.toml", f"nats://127.0.0.1:{port}")
        result = natsd(config, detached_store)
    assert result.returncode == 1
    assert "cannot start nats-server" in result.stderr
    assert "address already in use" in result.stderr  # the server's own log, quoted


def test_natsd_never_starts_a_server_for_a_remote_url(tmp_path: Path) -> None:
    # 192.0.2.1 is TEST-NET-1: nothing answers there.
    config = nats_config(tmp_path / "relay.toml", "nats://192.0.2.1:4222")
    result = natsd(config, tmp_path / "store")
    assert result.returncode == 1
    assert "not this machine's loopback" in result.stderr
    assert not (tmp_path / "store").exists()


def test_natsd_bad_config_and_bad_arguments_exit_2(tmp_path: Path) -> None:
    result = natsd(BAD_CONFIG, tmp_path / "store")
    assert result.returncode == 2
    assert str(BAD_CONFIG) in result.stderr
    assert not (tmp_path / "store").exists()

    missing = natsd(tmp_path / "nope.toml", tmp_path / "store")
    assert missing.returncode == 2
    assert "nope.toml" in missing.stderr

    no_store = subprocess.run(
        [sys.executable, "-m", "relay.natsd", "--config", str(BAD_CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert no_store.returncode == 2
    assert "--store" in no_store.stderr


# ---------------------------------------------------------------------------------------------
# examples/consumer.py: the book keeping


def snapshot(
    seq: int, bids: list[list[str]], asks: list[list[str]], symbol: str = "BTC-USDT"
) -> dict[str, Any]:
    return {
        **_common(symbol),
        "type": "l2_snapshot",
        "sequence": seq,
        "bids": bids,
        "asks": asks,
    }


def delta(
    first: int,
    seq: int,
    prev: int,
    bids: list[list[str]] | None = None,
    asks: list[list[str]] | None = None,
    symbol: str = "BTC-USDT",
) -> dict[str, Any]:
    return {
        **_common(symbol),
        "type": "l2_delta",
        "first_sequence": first,
        "sequence": seq,
        "prev_sequence": prev,
        "bids": bids or [],
        "asks": asks or [],
    }


def _common(symbol: str) -> dict[str, Any]:
    return {
        "venue": "binance",
        "symbol": symbol,
        "native_symbol": symbol.replace("-", ""),
        "ts_venue": None,
        "ts_recv": 1,
    }


def top(book: Any) -> tuple[Any, Any]:
    return book.best_bid(), book.best_ask()


def D(text: str) -> Decimal:
    return Decimal(text)


def test_books_apply_a_snapshot_and_its_chained_deltas() -> None:
    books = consumer.Books()
    key = ("binance", "BTC-USDT")
    assert books.on_message(
        snapshot(100, [["10.00", "1"], ["9.50", "2"]], [["10.50", "1"], ["11.00", "3"]])
    ) == (key, "snapshot")
    book = books.books[key]
    assert top(book) == ((D("10"), D("1")), (D("10.5"), D("1")))

    # New best bid; the best ask removed by a zero size, spelt differently from the snapshot.
    assert books.on_message(
        delta(101, 102, 100, bids=[["10.20", "4"]], asks=[["10.5", "0.000"]])
    ) == (key, "applied")
    assert top(book) == ((D("10.2"), D("4")), (D("11"), D("3")))
    # Absolute sizes: a level is replaced, not added to.
    assert books.on_message(delta(103, 104, 102, bids=[["10.2", "1.5"]])) == (key, "applied")
    assert top(book) == ((D("10.2"), D("1.5")), (D("11"), D("3")))
    assert book.sequence == 104
    assert not book.stale
    assert books.breaks == []
    # Equal prices are one level, whatever their spelling; it keeps the first one seen.
    assert "#104  bid 10.20 x 1.5 | ask 11.00 x 3  spread 0.80" in consumer.top_line(key, book)


def test_books_mark_a_broken_chain_stale_until_the_next_snapshot() -> None:
    books = consumer.Books()
    key = ("binance", "BTC-USDT")
    books.on_message(snapshot(100, [["10", "1"]], [["11", "1"]]))
    books.on_message(delta(101, 101, 100, bids=[["10.5", "2"]]))

    # 102..103 never arrived: this delta follows 103, the book is at 101.
    assert books.on_message(delta(104, 104, 103, asks=[["10.6", "1"]])) == (key, "break")
    book = books.books[key]
    assert book.stale
    assert books.breaks == [consumer.ChainBreak("binance", "BTC-USDT", 101, 103, 104)]
    # The broken delta was not applied, and neither is anything until a snapshot, not even
    # a delta that happens to continue the broken one.
    assert top(book) == ((D("10.5"), D("2")), (D("11"), D("1")))
    assert books.on_message(delta(105, 105, 104, bids=[["10.7", "1"]])) == (key, "skipped")
    assert book.sequence == 101

    assert books.on_message(snapshot(200, [["12", "5"]], [["13", "6"]])) == (key, "snapshot")
    assert not book.stale
    assert top(book) == ((D("12"), D("5")), (D("13"), D("6")))
    assert books.on_message(delta(201, 202, 200, asks=[["12.5", "1"]])) == (key, "applied")
    assert top(book) == ((D("12"), D("5")), (D("12.5"), D("1")))
    assert (book.snapshots, book.deltas_applied, book.deltas_skipped, book.breaks) == (2, 2, 2, 1)
    assert "binance BTC-USDT: live, 2 snapshot(s), 2 delta(s) applied, 2 skipped, 1 chain" in (
        consumer.summary(books)
    )


def test_books_wait_for_a_first_snapshot_and_keep_symbols_apart() -> None:
    books = consumer.Books()
    btc, eth = ("binance", "BTC-USDT"), ("binance", "ETH-USDT")
    assert books.on_message(delta(5, 6, 4, symbol="BTC-USDT")) == (btc, "skipped")
    assert books.books[btc].sequence is None
    assert books.on_message({"type": "trade", "venue": "binance"}) == (None, "ignored")

    books.on_message(snapshot(6, [["1", "1"]], [["2", "1"]], symbol="BTC-USDT"))
    books.on_message(snapshot(50, [["100", "1"]], [["101", "1"]], symbol="ETH-USDT"))
    assert books.on_message(delta(7, 7, 6, bids=[["1.5", "1"]], symbol="BTC-USDT"))[1] == "applied"
    # ETH's chain is its own: BTC's sequence does not continue it.
    assert books.on_message(delta(8, 8, 7, symbol="ETH-USDT")) == (eth, "break")
    assert not books.books[btc].stale
    assert books.books[eth].stale
    assert books.books[btc].best_bid() == (D("1.5"), D("1"))
    assert "waiting for a snapshot" not in consumer.summary(books)


# ---------------------------------------------------------------------------------------------
# examples/consumer.py and examples/demo.py as programs


def test_consumer_follows_a_real_stream(nats_server: NatsServer) -> None:
    subject = "market.binance.btc-usdt.l2_orderbook"
    messages = [
        snapshot(100, [["10.00", "1"]], [["10.50", "2"]]),
        delta(101, 102, 100, bids=[["10.20", "3"]]),
        delta(105, 106, 104, asks=[["10.40", "1"]]),  # 103..104 missing
        delta(107, 107, 106, asks=[["10.30", "1"]]),
        snapshot(300, [["9.00", "1"]], [["9.10", "1"]]),
        delta(301, 301, 300, bids=[["9.05", "7"]]),
    ]

    async def fill() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="MARKET_BOOKS", subjects=["market.*.*.l2_orderbook"])
            # Another symbol on the same stream, which the subject filter leaves out.
            other = snapshot(1, [["1", "1"]], [["2", "1"]], symbol="ETH-USDT")
            await js.publish("market.binance.eth-usdt.l2_orderbook", json.dumps(other).encode())
            for body in messages:
                await js.publish(subject, json.dumps(body).encode())
        finally:
            await nc.close()

    asyncio.run(fill())
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "consumer.py"),
            "--url",
            nats_server.url,
            "--subject",
            subject,
            "--idle-exit",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr  # a chain broke
    assert "snapshot  binance BTC-USDT  #100  bid 10.00 x 1 | ask 10.50 x 2" in out
    assert "delta     binance BTC-USDT  #102  bid 10.20 x 3 | ask 10.50 x 2" in out
    assert "CHAIN BREAK binance BTC-USDT: delta 106 follows 104" in out
    assert "delta     binance BTC-USDT  #301  bid 9.05 x 7 | ask 9.10 x 1" in out
    assert "10.30" not in out  # the delta after the break was skipped
    assert "ETH-USDT" not in out
    assert "binance BTC-USDT: live, 2 snapshot(s), 2 delta(s) applied, 2 skipped" in out


def test_demo_runs_offline_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    for kind, subject in [
        ("trade", "market.binance.nkn-usdt.trade"),
        ("ticker", "market.binance.nkn-usdt.ticker"),
        ("l2_snapshot", "market.binance.nkn-usdt.l2_orderbook"),
        ("l2_delta", "market.binance.nkn-usdt.l2_orderbook"),
        ("status", "market.binance._status"),
    ]:
        assert re.search(rf"^  {kind} +{re.escape(subject)}   Nats-Msg-Id: binance:", out, re.M), (
            kind
        )
    # The whole capture is stored: its 2 trades, 84 book tickers, 4 snapshots + 172 deltas.
    assert re.search(r"MARKET_TRADES +2 messages", out)
    assert re.search(r"MARKET_TICKERS +84 messages", out)
    assert re.search(r"MARKET_BOOKS +176 messages", out)
    assert "chain breaks: none" in out
    assert '"status": "ok"' in out
    assert "relay exited with 0" in out
