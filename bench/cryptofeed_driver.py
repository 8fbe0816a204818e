"""The peer side of ``bench/peer_cryptofeed.py``: cryptofeed's own handlers on capture frames.

This script runs INSIDE the throwaway virtualenv that ``peer_cryptofeed.py`` makes (Python
3.13, ``cryptofeed==3.0.1`` from PyPI). It imports cryptofeed, never ``relay`` or
``adapters``; cryptofeed stays out of the project (it is AGPL: never a dependency, never
vendored, and none of its code is copied here; this file only calls it).

**Input**: a work file (JSON, ``--work PATH``) written by ``peer_cryptofeed.py``. Per
capture: the cryptofeed feed class to use, the instruments (native spelling, base, quote,
kind), the cryptofeed channels, the connection's address, the received frames with their
receive times, how many leading frames are a warm-up (``prefix``), and the recorded REST
answers (depth snapshots).

**No network.** Feeds are built with their symbol table already in place: for each capture
the driver writes the instrument-list answer the venue's REST API would give for its
instruments (the documented shape, only the fields cryptofeed reads) and passes it to the
feed class's own ``_parse_symbol_data``, then stores the result in cryptofeed's ``Symbols``
table, which is what ``load_symbols`` does after its HTTP request; so no feed ever asks for
its symbol list. The one other HTTP use, the Binance depth snapshot, goes through
``HTTPAsyncConn.read``, which is replaced here, for the whole class, by a function that
answers from the capture's recorded REST bodies and refuses any other URL; ``write``,
``delete`` and ``_open`` (which would create an aiohttp session) refuse too. As a last
guard, ``socket.socket.connect``/``connect_ex`` and ``socket.getaddrinfo`` refuse every
address outside the loopback range, so nothing can leave the machine.

**What is timed**: per pass, a fresh feed object, set up as for a new connection
(``await feed.subscribe(conn)``, which resets its per-connection state; the subscribe
frames it writes are kept by ``conn``, never sent), all outside the timer; then the
capture's first ``prefix`` frames through ``feed.message_handler(msg, conn, timestamp)``
outside the timer (on Binance, the frames up to every book's first diff: that is where
cryptofeed fetches the REST snapshot), then the remaining frames through the same
coroutine, timed in CPU time of the thread (``time.thread_time``: what other processes
take of the core does not count) and in wall time (``time.perf_counter``). ``conn`` is a
stand-in with the ``uuid``, ``address`` and ``subscription`` the handlers read. Callbacks
are no-op coroutines for every channel. Passes repeat until the work file's ``seconds``
of CPU time per capture. A first, untimed pass counts what the callbacks received (by
channel), to show that the handlers did the work. An exception out of a handler is
counted per type and the pass goes on with the next frame (cryptofeed's connection
handler would reconnect instead).

**Output** on stdout: one JSON object ``{"python", "cryptofeed", "results": {capture:
{...}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import gc
import ipaddress
import json
import logging
import platform
import socket
import sys
import time
from importlib.metadata import version
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptofeed import connection as cf_connection
from cryptofeed import exchanges as cf_exchanges
from cryptofeed.symbols import Symbols

# ---------------------------------------------------------------------------------------------
# No traffic off the machine


def _loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def guard_network() -> None:
    """Refuse connections and name lookups for anything but loopback addresses."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            raise PermissionError(f"cryptofeed_driver: refused a connection to {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _loopback(host.decode() if isinstance(host, bytes) else host):
            raise PermissionError(f"cryptofeed_driver: refused a name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo


_RECORDED: dict[tuple[str, str], str] = {}
"""What ``HTTPAsyncConn.read`` answers: recorded bodies, by URL path and ``symbol`` query."""


def _rest_key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query).get("symbol", [""])[0].upper()


def set_recorded(rest: dict[str, str]) -> None:
    _RECORDED.clear()
    _RECORDED.update((_rest_key(url), body) for url, body in rest.items())


async def _read(conn: Any, address: str, *args: Any, **kwargs: Any) -> str:
    body = _RECORDED.get(_rest_key(address))
    if body is None:
        raise PermissionError(f"cryptofeed_driver: no recorded answer for {address}")
    return body


async def _refuse(conn: Any, *args: Any, **kwargs: Any) -> Any:
    raise PermissionError("cryptofeed_driver: no HTTP besides the recorded answers")


def patch_http() -> None:
    """cryptofeed's HTTP helper answers from the recording, and does nothing else."""
    http = cf_connection.HTTPAsyncConn
    http.read = _read  # type: ignore[method-assign]
    http.write = _refuse  # type: ignore[method-assign]
    http.delete = _refuse  # type: ignore[method-assign]
    http._open = _refuse  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# Symbol tables from instrument-list answers in each venue's documented REST shape


def instrument_answer(feed: str, instruments: list[dict[str, Any]]) -> Any:
    """The venue's instrument-list REST answer for ``instruments``, as ``load_symbols`` would
    hand it to ``_parse_symbol_data`` (one dict, or a list for venues with several
    instrument endpoints). Only the fields cryptofeed reads; tick sizes are placeholders."""
    if feed in ("Binance", "BinanceFutures"):
        symbols = []
        for i in instruments:
            entry = {
                "symbol": i["native"],
                "status": "TRADING",
                "baseAsset": i["base"],
                "quoteAsset": i["quote"],
                "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.00001"}],
            }
            if feed == "BinanceFutures":
                entry["contractType"] = "PERPETUAL"
                entry["contractStatus"] = "TRADING"
            symbols.append(entry)
        return {"symbols": symbols}
    if feed == "OKX":
        by_type: dict[str, list[dict[str, Any]]] = {"SPOT": [], "SWAP": [], "FUTURES": []}
        for i in instruments:
            inst_type = {"spot": "SPOT", "perp": "SWAP", "future": "FUTURES"}[i["kind"]]
            entry = {"instType": inst_type, "instId": i["native"], "tickSz": "0.1", "state": "live"}
            if inst_type == "SPOT":
                entry |= {"baseCcy": i["base"], "quoteCcy": i["quote"]}
            by_type[inst_type].append(entry)
        return [{"code": "0", "data": data} for data in by_type.values()]
    if feed == "Bybit":
        by_category: dict[str, list[dict[str, Any]]] = {"linear": [], "spot": []}
        for i in instruments:
            entry = {
                "symbol": i["base"] + i["quote"],
                "baseCoin": i["base"],
                "quoteCoin": i["quote"],
                "priceFilter": {"tickSize": "0.01"},
            }
            if i["kind"] == "perp":
                entry["contractType"] = "LinearPerpetual"
                by_category["linear"].append(entry)
            else:
                by_category["spot"].append(entry)
        return [{"retCode": 0, "result": {"list": v}} for v in by_category.values()]
    if feed == "Kraken":
        # wsname as Kraken spells it; cryptofeed maps XBT/XDG back to BTC/DOGE itself.
        legacy = {"BTC": "XBT", "DOGE": "XDG"}
        result = {}
        for i in instruments:
            base, quote = legacy.get(i["base"], i["base"]), legacy.get(i["quote"], i["quote"])
            result[base + quote] = {"wsname": f"{base}/{quote}"}
        return {"error": [], "result": result}
    if feed == "Coinbase":
        products = [
            {
                "product_id": i["native"],
                "base_currency_id": i["base"],
                "quote_currency_id": i["quote"],
                "quote_increment": "0.01",
            }
            for i in instruments
        ]
        return {"products": products}
    if feed == "Deribit":
        entries = []
        for i in instruments:
            # BTC-PERPETUAL, BTC-24SEP21-8000-P: Deribit's names carry what the answer says.
            parts = i["native"].split("-")
            entry: dict[str, Any] = {
                "instrument_name": i["native"],
                "base_currency": parts[0],
                "quote_currency": "USD",
                "tick_size": 0.0005,
                "kind": "option" if len(parts) == 4 else "future",
            }
            if parts[1] == "PERPETUAL":
                entry |= {"settlement_period": "perpetual", "expiration_timestamp": 32503708800000}
            else:
                expiry = dt.datetime.strptime(parts[1], "%d%b%y").replace(hour=8, tzinfo=dt.UTC)
                entry |= {
                    "settlement_period": "month",
                    "expiration_timestamp": int(expiry.timestamp() * 1000),
                }
                if len(parts) == 4:
                    entry |= {
                        "strike": float(parts[2]),
                        "option_type": "call" if parts[3] == "C" else "put",
                    }
            entries.append(entry)
        return [{"result": entries}]
    if feed == "Hyperliquid":
        perps = [{"name": i["native"]} for i in instruments if i["kind"] == "perp"]
        return [{"universe": perps}, {"tokens": [], "universe": []}]
    raise ValueError(f"no instrument answer for feed {feed}")


def load_symbols(feed_cls: Any, instruments: list[dict[str, Any]]) -> dict[str, str]:
    """Put the symbol table in place for ``feed_cls``; normalized → cryptofeed's native."""
    symbols, info = feed_cls._parse_symbol_data(instrument_answer(feed_cls.__name__, instruments))
    Symbols.set(feed_cls.id, symbols, info)
    return dict(symbols)


# ---------------------------------------------------------------------------------------------
# Running the handlers


class Conn:
    """What the handlers read of their connection."""

    def __init__(self, address: str, subscription: dict[str, list[str]]) -> None:
        self.address = address
        self.subscription = subscription
        self.uuid = "bench"
        self.id = "bench"
        self.sent: list[str] = []

    async def write(self, msg: str) -> None:
        """What the feed's ``subscribe`` sends: kept, never sent anywhere."""
        self.sent.append(msg)


async def _noop(obj: Any, receipt_timestamp: float) -> None:
    return None


def _counting(counts: collections.Counter[str], channel: str) -> Any:
    async def callback(obj: Any, receipt_timestamp: float) -> None:
        counts[channel] += 1

    return callback


class Capture:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.feed_cls = getattr(cf_exchanges, spec["feed"])
        self.channels: list[str] = spec["channels"]
        self.address: str = spec["address"]
        self.kwargs: dict[str, Any] = spec.get("feed_kwargs", {})
        self.frames: list[tuple[str, float]] = [(text, ts / 1e9) for text, ts in spec["frames"]]
        self.prefix: int = spec["prefix"]
        self.rest: dict[str, str] = spec.get("rest", {})
        self.symbols = sorted(load_symbols(self.feed_cls, spec["instruments"]))

    async def make(self, callbacks: dict[str, Any]) -> tuple[Any, Conn]:
        """A fresh feed, set up as for a new connection: ``subscribe(conn)`` resets the
        feed's per-connection state and writes its subscribe frames into ``conn``."""
        set_recorded(self.rest)
        feed = self.feed_cls(
            symbols=self.symbols, channels=self.channels, callbacks=callbacks, **self.kwargs
        )
        conn = Conn(self.address, {k: list(v) for k, v in feed.subscription.items()})
        await feed.subscribe(conn)
        return feed, conn

    async def run_pass(
        self, callbacks: dict[str, Any], errors: collections.Counter[str]
    ) -> tuple[float, float, int]:
        """One pass on a fresh feed: (timed CPU seconds, wall seconds, frames timed)."""
        feed, conn = await self.make(callbacks)
        handler = feed.message_handler
        frames = self.frames
        for text, ts in frames[: self.prefix]:
            try:
                await handler(text, conn, ts)
            except Exception as exc:
                errors[f"warm-up {type(exc).__name__}: {exc}"[:160]] += 1
        timed = frames[self.prefix :]
        failed: list[Exception] = []
        cpu, wall = time.thread_time(), time.perf_counter()
        for text, ts in timed:
            try:
                await handler(text, conn, ts)
            except Exception as exc:  # counted after the timer, outside the loop's cost
                failed.append(exc)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        for exc in failed:
            errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
        return cpu, wall, len(timed)

    async def measure(self, seconds: float, max_passes: int) -> dict[str, Any]:
        counts: collections.Counter[str] = collections.Counter()
        errors: collections.Counter[str] = collections.Counter()
        await self.run_pass({ch: _counting(counts, ch) for ch in self.channels}, errors)
        check_errors = dict(errors)
        errors.clear()
        noop = dict.fromkeys(self.channels, _noop)
        cpu, wall, frames, passes = 0.0, 0.0, 0, 0
        while cpu < seconds and passes < max_passes:
            c, w, n = await self.run_pass(noop, errors)
            cpu, wall, frames, passes = cpu + c, wall + w, frames + n, passes + 1
        return {
            "frames_per_pass": len(self.frames) - self.prefix,
            "warmup_frames": self.prefix,
            "passes": passes,
            "cpu_seconds": round(cpu, 4),
            "wall_seconds": round(wall, 4),
            "frames_per_cpu_s": round(frames / cpu) if cpu > 0 else None,
            "frames_per_s": round(frames / wall) if wall > 0 else None,
            "callbacks_per_pass": dict(sorted(counts.items())),
            "errors_per_pass": {k: v // max(passes, 1) for k, v in errors.items()},
            "check_pass_errors": check_errors,
        }


async def run(work: dict[str, Any], only: set[str] | None) -> dict[str, Any]:
    results = {}
    for spec in work["captures"]:
        if only and spec["name"] not in only:
            continue
        capture = Capture(spec)
        results[capture.name] = await capture.measure(work["seconds"], work["max_passes"])
        print(f"cryptofeed_driver: {capture.name} done", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the work file peer_cryptofeed.py wrote")
    parser.add_argument("--only", action="append", help="run only this capture (repeatable)")
    args = parser.parse_args(argv)
    guard_network()
    patch_http()
    # Handlers log unexpected frames at WARNING (e.g. frames of channels they do not know);
    # keep that off the timed path's stderr.
    logging.basicConfig(level=logging.ERROR)
    with open(args.work) as f:
        work = json.load(f)
    # The frames and the imports live all run long: out of the collector's way, as on our side.
    gc.collect()
    gc.freeze()
    results = asyncio.run(run(work, set(args.only) if args.only else None))
    out = {
        "python": platform.python_version(),
        "cryptofeed": version("cryptofeed"),
        "results": results,
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
