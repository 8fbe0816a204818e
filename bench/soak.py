"""``just soak``: the relay for a long time at a steady pace; does it leak memory or files?

The same real setup as ``bench/bench.py`` (whose functions it uses): a ``nats-server`` with
JetStream and a fresh file store, a loopback Binance venue as its own process, and the
relay, ``python -m relay run -c <config>``, on both, all on 127.0.0.1. Only the venue
differs: ``bench/feed.py`` encodes every frame before it listens, which caps a playback at
its buffer (1 GiB by default, about 9 minutes of Binance frames at 10k frames/s), so the
soak runs its own feed, ``python bench/soak.py feed``. It plays the same Binance frames
with the same ids as ``bench/feed.py`` (it uses that module's templates, shifts and
restoring diffs), pass after pass without end, encoding each pass when it is due; every
message is new to JetStream.

The feed sends ``--rate`` frames/s (10,000 by default) from the relay's first frame until
:data:`FEED_MARGIN` seconds after ``--duration`` (an hour by default). The warm-up lasts
``--warmup`` seconds (60), and at least until JetStream has reached the limits of every
stream (:data:`LIMITS`): until then the store is still filling, nats-server's costs and the
PubAck latency still change, and the relay's memory moves with them (a step of 1.5-2 MiB when
the books stream first discards, another when age limits start to expire messages). After
it, every ``--every`` seconds (10), the soak reads the relay's RSS (``VmRSS`` in
``/proc/PID/status``), its open file descriptors (``/proc/PID/fd``), its ``/metrics``, the
CPU time of the three processes, nats-server's RSS and the size of the JetStream store.
Once the feed has stopped and the relay has read and stored every frame, it takes the
final ``/metrics``, stops the relay (which drains and waits for its PubAcks), and reads how
many messages JetStream stored from the streams' last sequence numbers.

It reports the first sample after the warm-up (start), the last (end), the maximum and the
growth from start to end (and over the second half of the samples: a leak grows on, a
one-off step does not); frames sent, messages stored; gaps, resyncs, drops, retries and
errors from ``/metrics``; and whether the relay kept up: stored messages/s over the window
at least 97 % of the pace. It fails (exit 1) when the relay's RSS or its file descriptors
grew by :data:`MAX_GROWTH` % or more, or it fell behind.

The streams have limits (:data:`LIMITS`): at 10k frames/s JetStream stores about 4.3 MB/s,
some 15.5 GB an hour; with the limits the store stays under 520 MiB, whatever the duration.

Prints a table, then the figures as one JSON line; ``--json PATH`` writes them to a file
too, with every sample. Every process is stopped on exit, on errors and on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
from feed import (
    BINANCE_PATH,
    DEFAULT_CAPTURE,
    TICK,
    ShiftedFrame,
    Stream,
    _Connection,
    _exit_now,
    _exit_when_orphaned,
    rest_bodies,
    serve_until_stopped,
    shifted_templates,
    ws_header,
)
from feed import _say as _feed_say

from bench import (
    DATA_STREAMS,
    KEPT_UP_RATIO,
    STREAMS,
    Metrics,
    Processes,
    _interrupt,
    _say,
    cpu_seconds,
    environment,
    memory_kib,
    processes,
)
from relay.captures import load

SOAK = Path(__file__).resolve()
DURATION = 3600.0
RATE = 10_000.0
WARMUP = 60.0
EVERY = 10.0
MAX_GROWTH = 5.0
"""Percent: the relay's RSS or file descriptors growing by this much from the first sample
after the warm-up to the last fail the soak."""
FEED_MARGIN = 2.0
"""The feed streams this many seconds longer than ``--duration`` (its clock starts a few ms
before the relay's first frame): it is still sending at the last sample, and stops soon
after, so that the relay can read and store every frame before it is stopped."""
DONE_TIMEOUT = 10.0
"""Seconds to wait for the feed's last frame after it was due, and then again for the
relay to have read it and stored what it could."""
SLOW_PUBACK = 0.1
"""Seconds; a bound of the relay's ``relay_puback_latency_seconds`` buckets."""

MiB = 2**20
LIMITS: dict[str, dict[str, int]] = {
    "MARKET_BOOKS": {"max_bytes": 320 * MiB, "max_age_secs": 120},
    "MARKET_TICKERS": {"max_bytes": 160 * MiB, "max_age_secs": 120},
    "MARKET_TRADES": {"max_bytes": 32 * MiB, "max_age_secs": 120},
    "MARKET_STATUS": {"max_bytes": 8 * MiB, "max_age_secs": 120},
}
"""Stream limits of the soak's config (discard: old). Stored sizes at 10k frames/s, from a
paced bench run: books about 3.1 MB/s (68 % of the messages, 450 B each), tickers 1.2 MB/s
(32 %, 390 B), trades 25 kB/s (340 B): 15.5 GB in an hour, 36 million messages. These keep
the last 2 minutes, and at most 520 MiB in all: books reach their cap after about 110 s;
tickers, trades and status keep their 2 minutes. So every stream is at a limit about 2
minutes after the first frame, and the warm-up waits for that."""
STEADY_TIMEOUT = 600.0
"""Seconds after the first frame by which every stream must have reached a limit."""
DISK_SLACK = 256 * MiB
"""Free disk wanted beyond the limits: one partly filled 8 MiB block per stream, the logs."""


# ---------------------------------------------------------------------------------------------
# The endless feed: `python bench/soak.py feed`


class _Passes:
    """The capture's frames pass after pass, each pass's ids shifted exactly as
    :func:`feed.build_stream` shifts them, encoded one pass at a time."""

    def __init__(self, templates: list[ShiftedFrame]) -> None:
        # Own copies of the bodies: each connection shifts its own.
        self._templates = [(t.stream, dict(t.data), t.shifts) for t in templates]
        self._encode = msgspec.json.Encoder().encode
        self.number = 0

    def next(self) -> Stream:
        data = bytearray()
        ends: array[int] = array("q")
        for stream, body, shifts in self._templates:
            for name, base, step in shifts:
                body[name] = base + self.number * step
            payload = self._encode({"stream": stream, "data": body})
            data += ws_header(len(payload))
            data += payload
            ends.append(len(data))
        self.number += 1
        return Stream(data, ends, 1)


class _EndlessConnection(_Connection):
    """A connection of ``bench/feed.py``'s kind whose playback never runs out: paced at
    ``rate``, every tick it sends the frames due by then, encoding the next pass when the
    current one is spent. Same stdout lines: ``sent ...`` every second, ``done ...``."""

    def __init__(
        self,
        sock: socket.socket,
        number: int,
        templates: list[ShiftedFrame],
        rate: float,
        duration: float,
        tick: float,
    ) -> None:
        self.passes = _Passes(templates)
        # The bench's config looks for Binance at this path.
        super().__init__(sock, number, {BINANCE_PATH: self.passes.next()}, rate, duration, tick)

    def _stream(self, stream: Stream) -> None:
        view = memoryview(stream.data)
        i = 0  # frames of the current pass sent
        frames = nbytes = 0
        start = time.perf_counter()
        stop_at = start + self.duration if self.duration > 0 else math.inf
        next_report = start + 1.0
        reason = "duration"
        while True:
            now = time.perf_counter()
            if self.closed.is_set():
                reason = "closed"
                break
            if now >= stop_at:
                break
            if now >= next_report:
                _feed_say(self._line("sent", frames, nbytes, now - start))
                next_report += 1.0
            due = int((now - start) * self.rate) + 1
            while frames < due:
                take = min(due - frames, stream.frames - i)
                low = stream.ends[i - 1] if i else 0
                high = stream.ends[i + take - 1]
                try:
                    with self.send_lock:
                        self.sock.sendall(view[low:high])
                except OSError:
                    self.closed.set()  # the relay is gone: end with a done line all the same
                    break
                i, frames, nbytes = i + take, frames + take, nbytes + high - low
                if i == stream.frames:
                    view.release()
                    stream, i = self.passes.next(), 0
                    view = memoryview(stream.data)
            time.sleep(self.tick)
        line = self._line("done", frames, nbytes, time.perf_counter() - start)
        _feed_say(f"{line} reason={reason}")


def _serve_endless(
    listener: socket.socket,
    templates: list[ShiftedFrame],
    rate: float,
    duration: float,
    tick: float,
) -> None:
    number = 0
    while True:
        sock, _ = listener.accept()
        number += 1
        conn = _EndlessConnection(sock, number, templates, rate, duration, tick)
        threading.Thread(target=conn.run, name=f"ws-{number}", daemon=True).start()


def feed_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py feed",
        description="The soak's venue: bench/feed.py's frames and ids, paced, without end.",
    )
    parser.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE, help="cryptofeed capture")
    parser.add_argument("--rate", type=float, default=RATE, help=f"frames/s (default: {RATE:g})")
    parser.add_argument(
        "--tick", type=float, default=TICK, help=f"seconds between two writes (default: {TICK:g})"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop streaming after this many seconds per connection; 0 = never (default)",
    )
    parser.add_argument("--ws-port", type=int, default=0, help="0 = a free port (default)")
    parser.add_argument("--http-port", type=int, default=0, help="0 = a free port (default)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.tick <= 0 or args.duration < 0:
        parser.error("--rate and --tick must be positive, --duration at least 0")
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)

    recording = load(args.capture)
    templates = shifted_templates(recording)
    if not templates:
        parser.error(f"{args.capture} has no depth, bookTicker or trade frames to play")
    print(
        f"soak feed: {len(templates)} frames per pass, {args.rate:g} frames/s, "
        "each pass encoded when due",
        file=sys.stderr,
        flush=True,
    )
    listener = socket.create_server(("127.0.0.1", args.ws_port), backlog=16)
    return serve_until_stopped(
        listener,
        _serve_endless,
        (templates, args.rate, args.duration, args.tick),
        args.http_port,
        rest_bodies(recording),
    )


# ---------------------------------------------------------------------------------------------
# The soak


@dataclass(slots=True)
class Probe:
    """One sample, taken every ``--every`` seconds after the warm-up."""

    t: float
    """Seconds since the relay's first frame."""
    rss_kib: int
    """The relay's ``VmRSS``."""
    hwm_kib: int
    """The relay's ``VmHWM``, its peak RSS so far."""
    fds: int
    """The relay's open file descriptors."""
    nats_rss_kib: int | None
    store_bytes: int
    """The JetStream store's files, in bytes."""
    feed_frames: int
    """Frames the feed had sent, as last reported (about every second)."""
    cpu: dict[str, float]
    metrics: Metrics

    def row(self) -> dict[str, Any]:
        """For the JSON file: the probe without the whole scrape."""
        out = asdict(self)
        del out["metrics"], out["cpu"]
        out["t"] = round(self.t, 2)
        for name in ("relay_frames_received_total", "relay_published_messages_total"):
            out[name.removeprefix("relay_").removesuffix("_total")] = int(self.metrics.get(name))
        out["in_flight"] = int(self.metrics.get("relay_publish_in_flight"))
        out["pubacks_over_100ms"] = self.slow_pubacks
        return out

    @property
    def slow_pubacks(self) -> int:
        """PubAcks so far that came more than 100 ms after their frame (a stall somewhere:
        the relay descheduled, nats-server slow); from the latency histogram."""
        buckets = self.metrics.buckets
        within = next((n for le, n in buckets if le >= SLOW_PUBACK), 0.0)
        return int(buckets[-1][1] - within) if buckets else 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def disk_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (gone files, as JetStream deletes blocks, skipped)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


async def _stream_states(url: str) -> dict[str, dict[str, int]]:
    """Per stream: ``stored`` (its last sequence: every message it ever stored, including
    those the limits removed since), ``kept`` (messages it holds now) and ``bytes``."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        out = {}
        for name in STREAMS:
            state = (await js.stream_info(name)).state
            out[name] = {"stored": state.last_seq, "kept": state.messages, "bytes": state.bytes}
        return out
    finally:
        await nc.close()


@dataclass(slots=True)
class SoakResult:
    rate: float
    warmup: float
    every: float
    probes: list[Probe]
    final: Metrics
    """The relay's ``/metrics`` once it had stored what it read of the feed's last frame."""
    frames_sent: int
    feed_done: str | None
    relay_exit: int | None
    streams: dict[str, dict[str, int]]


def soak(args: argparse.Namespace, tmp: Path) -> SoakResult:
    """Start everything, sample, stop the relay, count what JetStream stored."""
    _say(f"[soak] starting nats-server, feed and relay in {tmp}")
    feed_command = [sys.executable, str(SOAK), "feed"]
    feed_seconds = args.duration + FEED_MARGIN
    with processes(
        "soak",
        tmp,
        args.rate,
        feed_seconds,
        feed_command=feed_command,
        limits=LIMITS,
        venues=("binance",),
    ) as procs:
        relay, feed = procs.relay, procs.feed
        pid = relay.proc.pid
        store = procs.server.store_dir
        first = procs.wait_first_frame()
        _say(
            f"[soak] first frame; warm-up {args.warmup:g} s and until every stream is at a "
            f"limit, then a sample every {args.every:g} s until {args.duration:g} s"
        )
        start = max(args.warmup, _until_at_limits(procs, first))
        if start + args.every > args.duration:
            raise RuntimeError(f"the warm-up took {start:.0f} s: no room left for two samples")
        _say(f"[soak] every stream at a limit; samples from {start:.0f} s")
        probes: list[Probe] = []
        n = 0
        while (offset := start + n * args.every) <= args.duration + 1e-9:
            # Sleep in short steps: a relay that dies is noticed within a second.
            while (left := first + offset - time.monotonic()) > 0:
                relay.check_alive()
                time.sleep(min(1.0, left))
            t = time.monotonic() - first
            cpu = {proc: cpu_seconds(p) for proc, p in procs.pids.items()}
            metrics = relay.metrics()
            # After the scrape, whose connection stays open: every sample counts it alike.
            memory, fds = memory_kib(pid), open_fds(pid)
            rss = memory["VmRSS"]
            nats_rss = memory_kib(procs.pids["nats"])["VmRSS"] if "nats" in procs.pids else None
            store_bytes = disk_bytes(store)
            probe = Probe(
                t, rss, memory["VmHWM"], fds, nats_rss, store_bytes, feed.sent_frames, cpu, metrics
            )
            probes.append(probe)
            relay.check_alive()
            _say(
                f"[soak] {t:5.0f} s: relay RSS {rss / 1024:.1f} MiB, {fds} fds; "
                f"{int(metrics.get('relay_frames_received_total')):,} frames read, "
                f"{int(metrics.get('relay_published_messages_total')):,} stored; "
                f"store {probe.store_bytes / MiB:.0f} MiB"
            )
            n += 1
        _say("[soak] waiting for the feed to stop and the relay to store its last frames")
        final = _settle(procs, first + args.duration + FEED_MARGIN + DONE_TIMEOUT)
        _say("[soak] stopping the relay (it drains and waits for its PubAcks)")
        relay.close()
        streams = asyncio.run(_stream_states(procs.server.url))
        return SoakResult(
            args.rate,
            round(start, 1),
            args.every,
            probes,
            final,
            feed.sent_frames,
            feed.done_reason,
            relay.proc.returncode,
            streams,
        )


def _until_at_limits(procs: Processes, first: float) -> float:
    """Wait until JetStream discards on every stream (it has dropped a stream's first
    message, by size or by age; a stream that never stored one counts as settled); the
    seconds from the first frame then. :data:`STEADY_TIMEOUT` bounds the wait."""
    while True:
        states = asyncio.run(_stream_states(procs.server.url))
        if all(s["stored"] == 0 or s["kept"] < s["stored"] for s in states.values()):
            return time.monotonic() - first
        if time.monotonic() - first > STEADY_TIMEOUT:
            raise RuntimeError(f"streams not at their limits after {STEADY_TIMEOUT:g} s: {states}")
        for _ in range(2):
            procs.relay.check_alive()
            time.sleep(1.0)


def _settle(procs: Processes, feed_deadline: float) -> Metrics:
    """Wait for the feed's last frame (until ``feed_deadline``), then until the relay has
    read every frame it sent and its counters stand still (at most :data:`DONE_TIMEOUT`
    seconds); its ``/metrics`` then."""
    relay, feed = procs.relay, procs.feed
    while feed.done_at is None and time.monotonic() < feed_deadline:
        relay.check_alive()
        time.sleep(0.1)
    deadline = time.monotonic() + DONE_TIMEOUT
    keys = ("relay_frames_received_total", "relay_published_messages_total")
    before = relay.metrics()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = relay.metrics()
        read = now.get("relay_frames_received_total")
        if read >= feed.sent_frames and all(now.get(k) == before.get(k) for k in keys):
            return now
        before = now
    return before


def _growth(start: float, end: float) -> float | None:
    return round(100 * (end - start) / start, 2) if start else None


def _series(values: list[float], scale: float = 1.0, digits: int | None = 1) -> dict[str, Any]:
    """Start (first sample), end (last), max and growth in % from start to end."""
    start, end = values[0], values[-1]
    return {
        "start": round(start / scale, digits),
        "end": round(end / scale, digits),
        "max": round(max(values) / scale, digits),
        "growth_percent": _growth(start, end),
        # A leak grows on; a one-off step (a stall that left a bigger heap) does not.
        "growth_second_half_percent": _growth(values[len(values) // 2], end),
    }


def summarize(result: SoakResult) -> dict[str, Any]:
    probes, final = result.probes, result.final
    a, b = probes[0], probes[-1]
    seconds = b.t - a.t

    def per_s(name: str) -> float:
        return (b.metrics.get(name) - a.metrics.get(name)) / seconds

    frames_per_s = per_s("relay_frames_received_total")
    stored_per_s = per_s("relay_published_messages_total")
    stored = sum(result.streams[name]["stored"] for name in DATA_STREAMS)
    kept = sum(result.streams[name]["kept"] for name in DATA_STREAMS)
    kept_bytes = sum(result.streams[name]["bytes"] for name in DATA_STREAMS)
    out: dict[str, Any] = {
        "target_frames_per_s": result.rate,
        "warmup_s": result.warmup,
        "sample_every_s": result.every,
        "samples": len(probes),
        "window_s": round(seconds, 1),
        "duration_s": round(b.t, 1),
        "relay_rss_mib": _series([p.rss_kib for p in probes], 1024),
        "relay_peak_rss_mib": round(b.hwm_kib / 1024, 1),
        "relay_fds": _series([p.fds for p in probes], digits=None),
        "nats_rss_mib": (
            _series([p.nats_rss_kib or 0 for p in probes], 1024)
            if a.nats_rss_kib is not None
            else None
        ),
        "store_mib": _series([p.store_bytes for p in probes], MiB),
        "store_limit_mib": round(sum(lim["max_bytes"] for lim in LIMITS.values()) / MiB),
        "frames_sent": result.frames_sent,
        "feed_end": result.feed_done,
        "frames_received": int(final.get("relay_frames_received_total")),
        "published_msgs": int(final.get("relay_published_messages_total")),
        "stored_msgs": stored,
        "status_msgs": result.streams["MARKET_STATUS"]["stored"],
        "kept_msgs": kept,
        "stored_bytes_per_msg": round(kept_bytes / kept) if kept else None,
        "feed_frames_per_s": round((b.feed_frames - a.feed_frames) / seconds),
        "frames_per_s": round(frames_per_s),
        "stored_msgs_per_s": round(stored_per_s),
        "kept_up": stored_per_s >= KEPT_UP_RATIO * result.rate,
        "pubacks_over_100ms": b.slow_pubacks - a.slow_pubacks,
        "relay_exit": result.relay_exit,
    }
    if kept:
        # What an hour at this pace would store without the limits.
        out["unbounded_gib_per_hour"] = round(result.rate * 3600 * kept_bytes / kept / 2**30, 1)
    for proc in b.cpu:
        out[f"{proc}_cpu_percent"] = round(100 * (b.cpu[proc] - a.cpu[proc]) / seconds)
    for name in (
        "relay_book_gaps_total",
        "relay_book_resyncs_total",
        "relay_checksum_failures_total",
        "relay_stale_deltas_dropped_total",
        "relay_parse_errors_total",
        "relay_reconnects_total",
        "relay_dropped_messages_total",
        "relay_published_duplicates_total",
        "relay_publish_errors_total",
        "relay_publish_retries_total",
    ):
        out[name.removeprefix("relay_").removesuffix("_total")] = int(final.get(name))
    for name in ("relay_publish_errors_total", "relay_dropped_messages_total"):
        if by := final.by_label(name):
            out[name.removeprefix("relay_").removesuffix("_total") + "_by_reason"] = by
    failures = []
    for key, what in (("relay_rss_mib", "relay RSS"), ("relay_fds", "relay open fds")):
        growth = out[key]["growth_percent"]
        if growth is not None and growth >= MAX_GROWTH:
            failures.append(f"{what} grew {growth:+.1f} % (limit {MAX_GROWTH:g} %)")
    if not out["kept_up"]:
        failures.append(
            f"the relay fell behind: {stored_per_s:,.0f} stored msgs/s for "
            f"{result.rate:,.0f} frames/s (needs {100 * KEPT_UP_RATIO:g} %)"
        )
    out["failures"] = failures
    out["passed"] = not failures
    return out


# ---------------------------------------------------------------------------------------------
# Output


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value if isinstance(value, str) else fmt.format(value)


def table(s: dict[str, Any]) -> str:
    lines = [
        f"soak: {s['duration_s']:,.0f} s at {s['target_frames_per_s']:,.0f} frames/s; "
        f"{s['samples']} samples every {s['sample_every_s']:g} s over the last "
        f"{s['window_s']:,.0f} s, after a {s['warmup_s']:g} s warm-up",
        "",
    ]
    series: list[tuple[str, str, str]] = [
        ("relay RSS, MiB", "relay_rss_mib", "{:,.1f}"),
        ("relay open fds", "relay_fds", "{:,.0f}"),
        ("nats-server RSS, MiB", "nats_rss_mib", "{:,.1f}"),
        ("JetStream store on disk, MiB", "store_mib", "{:,.0f}"),
    ]
    width = 40
    head = "".join(f"{h:>11}" for h in ("start", "end", "max", "growth", "2nd half"))
    lines.append(f"{'':{width}}{head}")
    for label, key, fmt in series:
        if (v := s.get(key)) is None:
            continue
        cells = [_cell(v[k], fmt) for k in ("start", "end", "max")]
        for k in ("growth_percent", "growth_second_half_percent"):
            cells.append("-" if v[k] is None else f"{v[k]:+.1f} %")
        lines.append(f"{label:{width}}" + "".join(f"{c:>11}" for c in cells))
    lines.append("")
    rows: list[tuple[str, str, str]] = [
        ("frames sent (feed)", "frames_sent", "{:,}"),
        ("frames read (relay)", "frames_received", "{:,}"),
        ("messages published (relay)", "published_msgs", "{:,}"),
        ("market data messages stored (JetStream)", "stored_msgs", "{:,}"),
        ("  kept within the limits", "kept_msgs", "{:,}"),
        ("  bytes per stored message", "stored_bytes_per_msg", "{:,}"),
        ("  an hour of them, unbounded, GiB", "unbounded_gib_per_hour", "{:,.1f}"),
        ("  store limit (max_bytes), MiB", "store_limit_mib", "{:,}"),
        ("feed frames/s (window)", "feed_frames_per_s", "{:,}"),
        ("relay frames read/s (window)", "frames_per_s", "{:,}"),
        ("stored msgs/s (window)", "stored_msgs_per_s", "{:,}"),
        ("kept up with the pace", "kept_up", "{}"),
        ("PubAcks > 100 ms after their frame", "pubacks_over_100ms", "{:,}"),
        ("relay peak RSS (VmHWM), MiB", "relay_peak_rss_mib", "{:,.1f}"),
        ("relay CPU, % of a core", "relay_cpu_percent", "{}"),
        ("nats-server CPU, % of a core", "nats_cpu_percent", "{}"),
        ("feed CPU, % of a core", "feed_cpu_percent", "{}"),
        ("book gaps", "book_gaps", "{:,}"),
        ("book resyncs", "book_resyncs", "{:,}"),
        ("checksum failures", "checksum_failures", "{:,}"),
        ("stale deltas dropped", "stale_deltas_dropped", "{:,}"),
        ("parse errors", "parse_errors", "{:,}"),
        ("reconnects", "reconnects", "{:,}"),
        ("dropped messages", "dropped_messages", "{:,}"),
        ("duplicates", "published_duplicates", "{:,}"),
        ("publish errors", "publish_errors", "{:,}"),
        ("publish retries", "publish_retries", "{:,}"),
        ("relay exit status", "relay_exit", "{}"),
    ]
    for label, key, fmt in rows:
        if key in s:
            lines.append(f"{label:{width}}{_cell(s[key], fmt):>11}")
    lines.append(f"(the soak fails at {MAX_GROWTH:g} % growth of the relay's RSS or fds)")
    verdict = "PASS" if s["passed"] else "FAIL: " + "; ".join(s["failures"])
    lines += ["", f"result: {verdict}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py",
        description=__doc__.splitlines()[0],
        epilog="`python bench/soak.py feed --help`: the soak's endless feed alone.",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=DURATION,
        help=f"seconds from the relay's first frame to the last sample, warm-up included "
        f"(default: {DURATION:g})",
    )
    parser.add_argument(
        "--rate", type=float, default=RATE, help=f"frames/s the feed sends (default: {RATE:g})"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP,
        help=f"seconds from the first frame to the first sample (default: {WARMUP:g})",
    )
    parser.add_argument(
        "--every", type=float, default=EVERY, help=f"seconds between samples (default: {EVERY:g})"
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="write the figures and every sample here"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (config, logs, JetStream store)"
    )
    return parser


def _check_disk(tmp: Path) -> None:
    need = sum(lim["max_bytes"] for lim in LIMITS.values()) + DISK_SLACK
    free = shutil.disk_usage(tmp).free
    if free < need:
        raise RuntimeError(f"{tmp}: {free / MiB:,.0f} MiB free, the soak needs {need / MiB:,.0f}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["feed"]:
        return feed_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if args.warmup < 0 or args.every <= 0:
        parser.error("--warmup must be at least 0 and --every positive")
    if args.duration < args.warmup + args.every:
        parser.error("--duration must leave room for two samples after the warm-up")
    signal.signal(signal.SIGTERM, _interrupt)
    env = environment()
    tmp = Path(tempfile.mkdtemp(prefix="relay-soak-"))
    keep = args.keep
    try:
        _check_disk(tmp)
        result = soak(args, tmp)
    except KeyboardInterrupt:
        _say("soak: interrupted")
        return 130
    except (RuntimeError, OSError) as exc:
        _say(f"soak: {exc}")
        keep = True
        return 1
    finally:
        if keep:
            _say(f"soak: config, logs and store kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(result)
    print(table(summary))
    print(json.dumps({"environment": env, "soak": summary}))
    if args.json:
        samples = [p.row() for p in result.probes]
        document = {"environment": env, "soak": summary, "samples": samples}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
