"""``just bench-peer``: our codecs against cryptofeed's handlers, on the same capture frames.

cryptofeed (https://github.com/bmoscon/cryptofeed) is the reference peer: an asyncio feed
handler whose per-venue classes decode the same public streams. It is AGPL, so it is never a
dependency of the project, never vendored and never imported by the relay or its tests: at
bench time this script makes a throwaway virtualenv (``bench/.peer-venv`` by default,
git-ignored) with a Python >= 3.13 interpreter found on the machine, pip-installs
``cryptofeed==3.0.1`` there, and runs ``bench/cryptofeed_driver.py`` in it as a separate
process. Only JSON crosses between the two: a work file with the frames, and the driver's
results on its stdout.

**Captures** (``CAPTURES``): the recorded frames the codec tests use (``tests/data/``), one
row each, in a wire format both sides read: cryptofeed 3.0.1 speaks Bybit v5, Kraken WS v2,
Coinbase Advanced Trade and OKX v5, as our codecs do (the older Bybit, Kraken and Coinbase
recordings in the shared captures are in formats neither side reads today). Both sides
subscribe to the same data where they can; what each produced in one pass is printed
under the table, and anything cryptofeed raised.

**What is timed**, on both sides alike, per pass on a fresh decoder (made outside the
timer): every frame of the capture, in order, with its recorded receive time. Ours:
``codec.receive(text, recv_ns)`` and ``codec.actions()`` after it, as the relay's shell does,
for the codec that owns the frame's stream (``make_codecs`` splits Binance USD-M by route).
cryptofeed: ``await feed.message_handler(text, conn, receipt_timestamp)`` with no-op
callbacks (see the driver's docstring). On venues whose book starts from a REST snapshot
(Binance spot, USD-M) the frames up to every book's first diff are a warm-up outside the
timer on both sides: that is where each side asks for the snapshot (ours: a FetchSnapshot
answered at once from the recording; cryptofeed: its HTTP helper, patched to answer from
the same recording). Frames/s = frames timed / seconds timed, in CPU time of the timing
thread (``time.thread_time``: on a shared machine, what other processes take of the core
does not count) and in wall time; passes repeat until ``--seconds`` of CPU time per
capture; a first untimed pass counts what each side produced. Both processes
``gc.freeze()`` their long-lived objects (captures, imports) before timing.

**Rounds.** ``--rounds`` times: the driver (every capture), then ours (every capture), so
that both sides see the same machine load; the figures are the medians over the rounds,
the ratio is ours / cryptofeed of the medians. The two sides run on different interpreters
(ours: this one; cryptofeed: >= 3.13, which it requires): both versions are printed.

Prints a table, then the figures as one JSON line; ``--json PATH`` writes them too.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import glob
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from memos import forget_memos

import adapters
from bench import _say, environment
from relay.captures import Frame, Recording, load
from relay.codec import Codec, FetchSnapshot, Subscription
from relay.events import DataType, VenueStatus

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"
DRIVER = HERE / "cryptofeed_driver.py"
DEFAULT_VENV = HERE / ".peer-venv"
CRYPTOFEED = "cryptofeed==3.0.1"
MIN_PYTHON = (3, 13)
"""cryptofeed 3.0.1 declares ``Requires-Python >=3.13``."""
TARGET = 2.0
"""The issue's target: ours at least this many times cryptofeed's frames/s."""
SECONDS = 0.5
ROUNDS = 5
MAX_PASSES = 200_000

T, K, B = DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK
BASIC = frozenset({T, K, B})


# ---------------------------------------------------------------------------------------------
# The captures


@dataclass(frozen=True, slots=True)
class PeerCapture:
    """One row: a recording, how our adapter subscribes to it, and the cryptofeed feed."""

    name: str
    paths: tuple[str, ...]
    """Under ``tests/data/``; several are played back to back as one connection."""
    adapter: str
    instruments: tuple[tuple[str, str], ...]
    """(our native symbol, kind: ``spot``, ``perp`` or ``future``)."""
    data_types: frozenset[DataType]
    feed: str
    """The cryptofeed exchange class."""
    channels: tuple[str, ...]
    """cryptofeed's channel names (``cryptofeed.defines``) for the same data."""
    rest_snapshots: bool = False
    """Books start from REST snapshots: time from the frame after every book's first diff."""
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of our ``make_codecs``."""
    note: str = ""


_CF_BASIC = ("trades", "ticker", "l2_book")

CAPTURES: tuple[PeerCapture, ...] = (
    PeerCapture(
        "binance_spot",
        ("cryptofeed/BINANCE.ws.1.0",),
        "binance",
        tuple((s, "spot") for s in ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")),
        BASIC,
        "Binance",
        _CF_BASIC,
        rest_snapshots=True,
        note="real 2021: depth@100ms, bookTicker, aggTrade, kline",
    ),
    PeerCapture(
        "binance_usdm",
        ("binance_usdm/cryptofeed_futures.jsonl",),
        "binance_usdm",
        (("AKROUSDT", "perp"), ("CTKUSDT", "perp")),
        BASIC,
        "BinanceFutures",
        _CF_BASIC,
        rest_snapshots=True,
        note="real 2021: depth@100ms (pu), bookTicker, aggTrade, kline",
    ),
    PeerCapture(
        "okx",
        ("okx/OKX.ws.1.0.part1.jsonl", "okx/OKX.ws.1.0.part2.jsonl"),
        "okx",
        (("BTC-USDT", "spot"), ("UNI-USD-SWAP", "perp"), ("BTC-USD-220527", "future")),
        BASIC,
        "OKX",
        _CF_BASIC,
        note="real 2022: books (ours checks CRC32, cryptofeed does not), trades, tickers",
    ),
    PeerCapture(
        "bybit_spot",
        ("bybit/ccxt_spot.jsonl",),
        "bybit",
        (("spot:BTCUSDT", "spot"),),
        BASIC,
        "Bybit",
        (*_CF_BASIC, "candles"),
        make_kwargs={"book_depth": 1},
        note="real 2026 (ccxt): orderbook.1, publicTrade, tickers, kline",
    ),
    PeerCapture(
        "bybit_linear",
        ("bybit/ccxt_linear.jsonl",),
        "bybit",
        (("linear:BTCUSDT", "perp"),),
        frozenset(DataType),
        "Bybit",
        (*_CF_BASIC, "candles", "funding", "open_interest", "index", "liquidations"),
        note="real 2026 (ccxt): orderbook.50, publicTrade, tickers (funding/OI), kline",
    ),
    PeerCapture(
        "kraken",
        (
            "kraken/book_depth10.jsonl",
            "kraken/book_repeated_snapshot.jsonl",
            "kraken/book_thin_then_deep.jsonl",
            "kraken/ticker.jsonl",
            "kraken/ohlc.jsonl",
            "kraken/trade_nautilus.jsonl",
        ),
        "kraken",
        (("BTC/USD", "spot"), ("DOGE/USDT", "spot")),
        BASIC,
        "Kraken",
        (*_CF_BASIC, "candles"),
        note="real 2026 (ccxt) v2: book with CRC32 (both check), ticker, ohlc; 1 doc trade",
    ),
    PeerCapture(
        "deribit_options",
        ("deribit/cryptofeed_options_raw.jsonl",),
        "deribit",
        (),  # every option of the capture, found in its frames
        BASIC,
        "Deribit",
        _CF_BASIC,
        note="real 2021: book.*.raw (change_id chain), ticker, 10 BTC/ETH options",
    ),
    PeerCapture(
        "deribit_perp",
        ("deribit/ccxt_btc_perpetual.jsonl",),
        "deribit",
        (("BTC-PERPETUAL", "perp"),),
        frozenset(DataType) - {DataType.LIQUIDATION},
        "Deribit",
        (*_CF_BASIC, "funding", "open_interest"),
        note="real 2026 (ccxt): book.100ms, trades, ticker (funding, OI)",
    ),
    PeerCapture(
        "hyperliquid",
        ("hyperliquid/ccxt_nautilus_btc.jsonl",),
        "hyperliquid",
        (("BTC", "perp"),),
        frozenset({T, B}),
        "Hyperliquid",
        ("trades", "l2_book"),
        note="real 2026 (ccxt, nautilus): l2Book, trades, activeAssetCtx, candle, allMids",
    ),
    PeerCapture(
        "coinbase_trades",
        ("coinbase/market_trades.jsonl",),
        "coinbase",
        (("BTC-USD", "spot"),),
        BASIC,
        "Coinbase",
        _CF_BASIC,
        note="real 2026 (ccxt) Advanced Trade: market_trades",
    ),
    PeerCapture(
        "coinbase_ticker",
        ("coinbase/ticker.jsonl",),
        "coinbase",
        (("BTC-USD", "spot"),),
        BASIC,
        "Coinbase",
        _CF_BASIC,
        note="real 2026 (ccxt) Advanced Trade: ticker",
    ),
)


@dataclass(slots=True)
class Loaded:
    """A capture's frames and recorded REST answers, loaded once."""

    spec: PeerCapture
    frames: list[Frame]
    rest: dict[str, str]
    """Recorded REST bodies by request URL."""
    prefix: int
    address: str


def load_capture(spec: PeerCapture) -> Loaded:
    recordings: list[Recording] = [load(DATA / p) for p in spec.paths]
    frames = [f for r in recordings for f in r.received]
    if not spec.instruments:
        spec = replace(spec, instruments=tuple((n, "option") for n in _deribit_names(frames)))
    rest = {h.url: h.body for r in recordings for h in r.http}
    prefix = _warmup(frames, spec) if spec.rest_snapshots else 0
    return Loaded(spec, frames, rest, prefix, recordings[0].url)


def _deribit_names(frames: Sequence[Frame]) -> list[str]:
    """The instruments of a Deribit capture's notifications, in order of appearance."""
    seen: dict[str, None] = {}
    for frame in frames:
        msg = json.loads(frame.text)
        data = msg.get("params", {}).get("data") if isinstance(msg, dict) else None
        if isinstance(data, dict) and isinstance(data.get("instrument_name"), str):
            seen[data["instrument_name"]] = None
    return list(seen)


def _warmup(frames: Sequence[Frame], spec: PeerCapture) -> int:
    """Frames up to and including the first depth diff of the capture's last book to start."""
    first: dict[str, int] = {}
    for i, frame in enumerate(frames):
        msg = json.loads(frame.text)
        data = msg.get("data", msg) if isinstance(msg, dict) else {}
        if isinstance(data, dict) and data.get("e") == "depthUpdate":
            first.setdefault(data["s"], i)
    wanted = {native.upper() for native, _ in spec.instruments}
    if not wanted <= first.keys():
        raise ValueError(f"{spec.name}: no depth diff for {sorted(wanted - first.keys())}")
    return max(first[s] for s in wanted) + 1


# ---------------------------------------------------------------------------------------------
# Our side


def _bare(native: str) -> str:
    return native.partition(":")[2] or native


def _subscriptions(spec: PeerCapture) -> list[Subscription]:
    adapter = adapters.load(spec.adapter)
    out = []
    for native, _ in spec.instruments:
        # Options have no canonical spelling: config names them (the tests: the native).
        canonical = adapter.canonical_symbol(native) or native
        out.append(Subscription(native, canonical, spec.data_types))
    return out


def _stream_of(text: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        stream = json.loads(text).get("stream")
        return stream if isinstance(stream, str) else None
    return None


class Ours:
    """Our codecs on one capture, the way the tests drive them."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        spec = loaded.spec
        self.adapter = adapters.load(spec.adapter)
        self.subscriptions = _subscriptions(spec)
        self.bodies = {_rest_key(url): body.encode() for url, body in loaded.rest.items()}
        codecs = self._make()
        # Which codec reads which frame: the one subscribed to its stream when there are
        # several (Binance USD-M's public and market routes), else the only one.
        self.route: list[int] = []
        for frame in loaded.frames:
            index = 0
            if len(codecs) > 1 and (stream := _stream_of(frame.text)) is not None:
                for i, codec in enumerate(codecs):
                    if stream in getattr(codec, "streams", ()):
                        index = i
                        break
            self.route.append(index)

    def _make(self) -> list[Codec]:
        spec = self.loaded.spec
        codecs = self.adapter.make_codecs(
            spec.adapter, self.subscriptions, self.adapter.default_endpoints, **spec.make_kwargs
        )
        start = self.loaded.frames[0].ts - 1
        for codec in codecs:
            codec.connected(start)
            codec.actions()
        return codecs

    def _answer(self, codec: Codec, actions: list[Any], recv_ns: int, events: list[Any]) -> None:
        """Answer FetchSnapshots at once from the recording (and those their answers ask)."""
        for _ in range(100):
            fetches = [a for a in actions if isinstance(a, FetchSnapshot)]
            if not fetches:
                return
            for action in fetches:
                events += codec.snapshot_received(
                    action.key, self.bodies[_rest_key(action.url)], recv_ns
                )
            actions = codec.actions()

    def run_pass(
        self, events: list[Any] | None = None, *, cold: bool = False
    ) -> tuple[float, float, int]:
        """One pass on fresh codecs: (timed CPU seconds, wall seconds, frames timed).
        ``events``, when given, collects what every frame and snapshot gave (else the events
        are dropped, as cryptofeed's no-op callbacks drop theirs); ``cold`` empties the
        codecs' memos first (:func:`forget_memos`), outside the timer."""
        if cold:
            forget_memos()
        codecs = self._make()
        sink: list[Any] = [] if events is None else events
        frames, route, prefix = self.loaded.frames, self.route, self.loaded.prefix
        for frame, i in zip(frames[:prefix], route[:prefix], strict=True):
            codec = codecs[i]
            sink += codec.receive(frame.text, frame.ts)
            self._answer(codec, codec.actions(), frame.ts, sink)
        timed = [(f.text, f.ts, codecs[i]) for f, i in zip(frames, route, strict=True)][prefix:]
        answer = self._answer
        cpu, wall = time.thread_time(), time.perf_counter()
        if events is None:
            for text, ts, codec in timed:
                codec.receive(text, ts)
                if actions := codec.actions():
                    answer(codec, actions, ts, sink)
        else:
            for text, ts, codec in timed:
                events += codec.receive(text, ts)
                if actions := codec.actions():
                    answer(codec, actions, ts, events)
        return time.thread_time() - cpu, time.perf_counter() - wall, len(timed)

    def measure(self, seconds: float, max_passes: int, *, cold: bool = False) -> dict[str, Any]:
        events: list[Any] = []
        self.run_pass(events, cold=cold)
        produced: Counter[str] = Counter()
        for e in events:
            produced[f"status:{e.kind}" if isinstance(e, VenueStatus) else type(e).__name__] += 1
        cpu, wall, frames, passes = 0.0, 0.0, 0, 0
        while cpu < seconds and passes < max_passes:
            c, w, n = self.run_pass(cold=cold)
            cpu, wall, frames, passes = cpu + c, wall + w, frames + n, passes + 1
        return {
            "passes": passes,
            "cpu_seconds": round(cpu, 4),
            "wall_seconds": round(wall, 4),
            "frames_per_cpu_s": round(frames / cpu) if cpu > 0 else None,
            "frames_per_s": round(frames / wall) if wall > 0 else None,
            "events_per_pass": dict(sorted(produced.items())),
        }


def _rest_key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query).get("symbol", [""])[0].upper()


# ---------------------------------------------------------------------------------------------
# cryptofeed's side: the interpreter, the virtualenv, the work file


def _version_of(python: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(int(x) for x in out.split())


def find_python(explicit: str | None = None) -> tuple[str, tuple[int, ...]] | None:
    """A Python >= 3.13: ``explicit``, else ``python3.13``/``3.14``/... on PATH, else the
    newest matching pyenv version."""
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    else:
        for minor in range(MIN_PYTHON[1], MIN_PYTHON[1] + 10):
            if found := shutil.which(f"python3.{minor}"):
                candidates.append(found)
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        candidates += sorted(glob.glob(f"{root}/versions/3.*/bin/python3"), reverse=True)
    for python in candidates:
        version = _version_of(python)
        if version is not None and version >= MIN_PYTHON:
            return python, version
    return None


def ensure_venv(python: str, venv: Path, fresh: bool) -> Path:
    """The virtualenv's interpreter, with cryptofeed installed (made or refreshed as needed)."""
    stamp = venv / ".installed"
    wanted = f"{CRYPTOFEED} {python}"
    if fresh or not stamp.is_file() or stamp.read_text().strip() != wanted:
        _say(f"peer: making {venv} with {python} and pip-installing {CRYPTOFEED}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--disable-pip-version-check", CRYPTOFEED], check=True)
        stamp.write_text(wanted + "\n")
    return venv / "bin" / "python"


def _instrument(spec: PeerCapture, native: str, kind: str) -> dict[str, str]:
    canonical = adapters.load(spec.adapter).canonical_symbol(native) or native
    base, quote, *_ = [*canonical.split("-"), ""]
    return {"native": _bare(native), "base": base, "quote": quote, "kind": kind}


def work_file(loaded: Sequence[Loaded], seconds: float, max_passes: int) -> dict[str, Any]:
    captures = []
    for cap in loaded:
        spec = cap.spec
        captures.append(
            {
                "name": spec.name,
                "feed": spec.feed,
                "channels": list(spec.channels),
                "address": cap.address,
                "instruments": [_instrument(spec, n, k) for n, k in spec.instruments],
                "frames": [[f.text, f.ts] for f in cap.frames],
                "prefix": cap.prefix,
                "rest": cap.rest,
            }
        )
    return {"seconds": seconds, "max_passes": max_passes, "captures": captures}


def run_driver(python: Path, work: Path, only: Iterable[str]) -> dict[str, Any]:
    cmd = [str(python), str(DRIVER), "--work", str(work)]
    for name in only:
        cmd += ["--only", name]
    # No proxy variables: the driver needs no network, and guards against any.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cryptofeed driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ---------------------------------------------------------------------------------------------
# Figures


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(
    loaded: Sequence[Loaded],
    peer_runs: list[dict[str, Any]],
    our_runs: list[dict[str, dict[str, Any]]],
    cold_runs: list[dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """Per capture: medians over the rounds of frames per CPU second (the primary figure)
    and per wall second, and the ratios ours / cryptofeed of those medians; the same per CPU
    second for ours with cold memos (``cold``)."""
    captures: dict[str, Any] = {}
    for cap in loaded:
        name = cap.spec.name
        cf = [run["results"][name] for run in peer_runs]
        ours = [run[name] for run in our_runs]
        row: dict[str, Any] = {
            "note": cap.spec.note,
            "frames": len(cap.frames),
            "frames_timed": len(cap.frames) - cap.prefix,
            "warmup_frames": cap.prefix,
        }
        for key, suffix in (
            ("frames_per_cpu_s", "_frames_per_cpu_s"),
            ("frames_per_s", "_frames_per_s"),
        ):
            cf_value = _median([r[key] for r in cf])
            our_value = _median([r[key] for r in ours])
            row["cryptofeed" + suffix] = round(cf_value) if cf_value else None
            row["ours" + suffix] = round(our_value) if our_value else None
            ratio = our_value / cf_value if cf_value and our_value else None
            row["ratio" if key == "frames_per_cpu_s" else "ratio_wall"] = (
                round(ratio, 2) if ratio else None
            )
            row["cryptofeed" + suffix + "_runs"] = [r[key] for r in cf]
            row["ours" + suffix + "_runs"] = [r[key] for r in ours]
        cold = _median([run[name]["frames_per_cpu_s"] for run in cold_runs])
        cf_median = row["cryptofeed_frames_per_cpu_s"]
        row["ours_cold_frames_per_cpu_s"] = round(cold) if cold else None
        row["ratio_cold"] = round(cold / cf_median, 2) if cold and cf_median else None
        row["ours_cold_frames_per_cpu_s_runs"] = [
            run[name]["frames_per_cpu_s"] for run in cold_runs
        ]
        cf_cpu, our_cpu = row["cryptofeed_frames_per_cpu_s"], row["ours_frames_per_cpu_s"]
        row["cryptofeed_us_per_frame"] = round(1e6 / cf_cpu, 2) if cf_cpu else None
        row["ours_us_per_frame"] = round(1e6 / our_cpu, 2) if our_cpu else None
        row["cryptofeed_callbacks_per_pass"] = cf[0]["callbacks_per_pass"]
        row["ours_events_per_pass"] = ours[0]["events_per_pass"]
        row["cryptofeed_errors_per_pass"] = cf[0]["check_pass_errors"]
        captures[name] = row
    summary: dict[str, Any] = {"target_ratio": TARGET}
    for key, suffix in (("ratio", ""), ("ratio_cold", "_cold")):
        ratios = [row[key] for row in captures.values() if row[key]]
        summary["geomean_ratio" + suffix] = (
            round(math.exp(statistics.fmean(map(math.log, ratios))), 2) if ratios else None
        )
        summary["min_ratio" + suffix] = min(ratios) if ratios else None
        summary["below_target" + suffix] = [
            name for name, row in captures.items() if (row[key] or 0) < TARGET
        ]
    return {"captures": captures, "summary": summary}


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def table(figures: dict[str, Any]) -> str:
    """One row per capture: frames per CPU second of each side, the ratio, µs per frame,
    and the ratio in wall time."""
    head = (
        f"{'capture':<16} {'frames':>6} {'timed':>5}  {'cryptofeed f/s':>14} {'ours f/s':>10}"
        f"  {'ours/cf':>7}  {'cf µs/f':>7} {'ours µs/f':>9}  {'wall ours/cf':>12}"
        f"  {'cold f/s':>10} {'cold/cf':>7}"
    )
    lines = [head, "-" * len(head)]
    for name, row in figures["captures"].items():
        lines.append(
            f"{name:<16} {row['frames']:>6} {row['frames_timed']:>5}  "
            f"{_cell(row['cryptofeed_frames_per_cpu_s'], '{:,.0f}'):>14} "
            f"{_cell(row['ours_frames_per_cpu_s'], '{:,.0f}'):>10}  "
            f"{_cell(row['ratio'], '{:.2f}x'):>7}  "
            f"{_cell(row['cryptofeed_us_per_frame'], '{:.1f}'):>7} "
            f"{_cell(row['ours_us_per_frame'], '{:.1f}'):>9}  "
            f"{_cell(row['ratio_wall'], '{:.2f}x'):>12}  "
            f"{_cell(row['ours_cold_frames_per_cpu_s'], '{:,.0f}'):>10} "
            f"{_cell(row['ratio_cold'], '{:.2f}x'):>7}"
        )
    s = figures["summary"]
    lines.append("-" * len(head))
    lines.append(
        f"ours/cf (CPU time): geometric mean {s['geomean_ratio']}x, lowest {s['min_ratio']}x; "
        f"target >= {s['target_ratio']:g}x; below: {', '.join(s['below_target']) or 'none'}"
    )
    lines.append(
        f"cold memos (every pass starts with the codecs' number memos empty): geometric mean "
        f"{s['geomean_ratio_cold']}x, lowest {s['min_ratio_cold']}x; "
        f"below: {', '.join(s['below_target_cold']) or 'none'}"
    )
    return "\n".join(lines)


def checks(figures: dict[str, Any]) -> str:
    """What each side produced in one pass, to see that both did the work."""
    lines = ["what one pass produced (cryptofeed callbacks | our events):"]
    for name, row in figures["captures"].items():
        cf = ", ".join(f"{k} {v}" for k, v in row["cryptofeed_callbacks_per_pass"].items())
        ours = ", ".join(f"{k} {v}" for k, v in row["ours_events_per_pass"].items())
        lines.append(f"  {name}: {cf or '-'} | {ours or '-'}")
        for error, n in row["cryptofeed_errors_per_pass"].items():
            lines.append(f"    cryptofeed raised {n}x: {error}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/peer_cryptofeed.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=SECONDS,
        help=f"timed seconds per capture, side and round (default: {SECONDS:g})",
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"rounds, medians taken (default: {ROUNDS})"
    )
    parser.add_argument(
        "--only", action="append", metavar="CAPTURE", help="only this capture (repeatable)"
    )
    parser.add_argument("--python", help="the Python >= 3.13 for cryptofeed (default: found)")
    parser.add_argument(
        "--venv",
        type=Path,
        default=DEFAULT_VENV,
        help="cryptofeed's throwaway virtualenv (default: bench/.peer-venv)",
    )
    parser.add_argument("--fresh-venv", action="store_true", help="remake the virtualenv")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures here too")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    specs = [c for c in CAPTURES if not args.only or c.name in args.only]
    if not specs:
        parser.error(f"--only: choose from {', '.join(c.name for c in CAPTURES)}")
    found = find_python(args.python)
    if found is None:
        _say(
            "peer: skipped: cryptofeed 3.0.1 needs Python >= 3.13 and none was found "
            "(python3.13 on PATH, a pyenv version, or --python PATH)"
        )
        return 0
    python, version = found
    try:
        peer_python = ensure_venv(python, args.venv, args.fresh_venv)
    except subprocess.CalledProcessError as exc:
        _say(f"peer: could not make the cryptofeed virtualenv: {exc}")
        return 1

    loaded = [load_capture(spec) for spec in specs]
    ours = {cap.spec.name: Ours(cap) for cap in loaded}
    # The captures and the imports live all run long: out of the collector's way, as the
    # driver does on its side.
    gc.collect()
    gc.freeze()
    peer_runs: list[dict[str, Any]] = []
    our_runs: list[dict[str, dict[str, Any]]] = []
    cold_runs: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="relay-peer-") as tmp:
        work = Path(tmp) / "work.json"
        work.write_bytes(msgspec.json.encode(work_file(loaded, args.seconds, MAX_PASSES)))
        try:
            for n in range(1, args.rounds + 1):
                _say(f"peer: round {n}/{args.rounds}: cryptofeed")
                peer_runs.append(run_driver(peer_python, work, [c.spec.name for c in loaded]))
                _say(f"peer: round {n}/{args.rounds}: ours")
                our_runs.append(
                    {name: o.measure(args.seconds, MAX_PASSES) for name, o in ours.items()}
                )
                _say(f"peer: round {n}/{args.rounds}: ours, cold memos")
                cold_runs.append(
                    {
                        name: o.measure(args.seconds, MAX_PASSES, cold=True)
                        for name, o in ours.items()
                    }
                )
        except RuntimeError as exc:
            _say(f"peer: {exc}")
            return 1
        except KeyboardInterrupt:
            _say("peer: interrupted")
            return 130

    figures: dict[str, Any] = {
        "environment": environment(),
        "peer": {
            "cryptofeed": peer_runs[0]["cryptofeed"],
            "cryptofeed_python": peer_runs[0]["python"],
            "ours_python": platform.python_version(),
            "rounds": args.rounds,
            "seconds_per_capture": args.seconds,
        },
        **summarize(loaded, peer_runs, our_runs, cold_runs),
    }
    print(
        f"cryptofeed {figures['peer']['cryptofeed']} on Python {'.'.join(map(str, version))} vs "
        f"ours on Python {platform.python_version()}; median of {args.rounds} rounds, "
        f"{args.seconds:g} s timed per capture and side each"
    )
    print(table(figures))
    print(checks(figures))
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
