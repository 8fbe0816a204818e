"""``just bench``: the relay end to end, as real processes, and the figures it reaches.

Each run starts its own processes on 127.0.0.1 and stops them before the next one:

* a ``nats-server`` with JetStream and a fresh file store (:class:`relay.natsd.NatsServer`);
* the feed, ``bench/feed.py``: fast loopback venues, one process, each playing real
  captures in its own wire format in a loop with shifted ids, so that every frame becomes
  a new message for JetStream (the mix of :data:`feed.VENUES` by default; ``--venues`` to
  choose, ``--venues binance`` for the Binance-only run);
* the relay, ``python -m relay run -c <config>``: each venue of the mix on the feed, with
  the instruments and data types its captures carry, one stream per data type
  (:data:`STREAMS`) on file storage. ``--workers N`` sets ``service.workers``: the venues
  are shared over N processes, and the relay's CPU and RSS are then its processes'. A
  venue named twice (``--venues binance,binance``) is declared twice, ``binance`` and
  ``binance-2``, each with its own connection and copy of the capture.

Two runs:

**saturated**: the feed sends as fast as the relay reads. The relay reads faster than it
publishes until its bounded channels are full, so the measuring window starts only once
the relay stores messages as fast as it makes them of the frames it reads (steady state;
at least ``--warmup`` seconds after the first frame, at most ``--max-warmup``). Over the
window, the relay's ``/metrics`` counters give frames/s and stored messages/s, in all and
per venue, ``/proc`` the CPU seconds of the relay, nats-server and the feed (to see who
limits whom on a small machine) and the relay's peak RSS.

**paced** (10k frames/s in all by default, shared evenly by the feed's connections):
frame-received → PubAck latency over the window, after
``--warmup``, from two sources. The relay's ``relay_puback_latency_seconds`` histogram:
bucket deltas, interpolated within buckets as Prometheus' ``histogram_quantile`` does, so
only as fine as its buckets. And JetStream itself, exactly: every stored message carries
``ts_recv`` (when the relay read its frame) and its stream timestamp (when JetStream stored
it), both read from the same clock, so their difference is frame-received → stored, which
is the PubAck's moment minus the trip of the PubAck back into the relay.

Prints a table, then the figures as one JSON line; ``--json PATH`` writes them to a file
too. Every process is stopped on exit, on errors and on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import itertools
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx
import msgspec
import nats
from feed import VENUES  # bench/feed.py (this file runs as a script from bench/)
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

import relay
from relay.natsd import NatsServer, find_nats_server, free_port

FEED = Path(__file__).resolve().parent / "feed.py"
SYMBOLS = list(VENUES["binance"].subscriptions[0][0])
"""The Binance spot capture's symbols."""
STREAMS = {
    "MARKET_TRADES": "market.*.*.trade",
    "MARKET_TICKERS": "market.*.*.ticker",
    "MARKET_BOOKS": "market.*.*.l2_orderbook",
    "MARKET_FUNDING": "market.*.*.funding_rate",
    "MARKET_MARK_PRICES": "market.*.*.mark_price",
    "MARKET_OPEN_INTEREST": "market.*.*.open_interest",
    "MARKET_STATUS": "market.*._status",
}
"""One stream per data type the mix publishes, and the status events."""
DATA_STREAMS = [name for name in STREAMS if name != "MARKET_STATUS"]

SATURATED_SECONDS = 20.0
PACED_SECONDS = 15.0
PACED_RATE = 10_000.0
WARMUP = 5.0
"""Seconds from the first frame before any window: books sync, snapshots come, caches warm."""
MAX_WARMUP = 60.0
STEADY_SECONDS = 3
"""Saturated steady state: over this many seconds, stored messages/s within
:data:`STEADY_RATIO` of the events/s the relay made of the frames it read (a frame makes
one event or several: a Bybit ticker is also a mark price, a funding rate and an open
interest)."""
STEADY_RATIO = 0.95
KEPT_UP_RATIO = 0.97
"""A paced run kept up when it read at least this share of the target rate."""
SAMPLE_EVERY = 1.0
READY_TIMEOUT = 30.0
FEED_TIMEOUT = 120.0
"""Seconds the feed may take to encode its frames and listen (1 GiB of them at full speed)."""
STOP_TIMEOUT = 5.0
QUANTILES = (0.5, 0.9, 0.99, 0.999)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


def _find_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):  # not Linux
        return None
    return prctl


_prctl = _find_prctl()  # looked up once, here: the forked child should do as little as it can


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the bench dies, even by SIGKILL (Linux)."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then SIGKILL if still there after ``timeout`` seconds; the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: count fields after its ')'.
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15: utime, stime


def memory_kib(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak RSS) and ``VmRSS`` of a live process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


class Feed:
    """``bench/feed.py`` as a child process; a thread reads its stdout.

    ``command`` runs another feed that speaks the same stdout protocol instead (the soak's
    endless one), or this one with options; ``--rate`` (per connection) and ``--duration``
    are appended to it.
    """

    def __init__(
        self, rate: float, duration: float, log: Path, command: Sequence[str] | None = None
    ) -> None:
        cmd = [*(command or (sys.executable, str(FEED))), "--rate", str(rate)]
        cmd += ["--duration", str(duration)]
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            preexec_fn=_die_with_parent,
        )
        self.urls: dict[str, str] = {}
        self.done_at: float | None = None
        """``time.monotonic()`` when the first stream of a connection ended ..."""
        self.done_reason: str | None = None
        """... and why: ``end`` (out of frames), ``duration`` or ``closed``."""
        self._sent: dict[str, int] = {}
        """Frames sent per connection, as last reported (about every second, and exactly
        once its stream ended)."""
        self._listening = threading.Event()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stdout: TextIO) -> None:
        for line in stdout:
            words = line.split()
            if words and words[0] in ("sent", "done"):
                fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
                if "conn" in fields and "frames" in fields:
                    self._sent[fields["conn"]] = int(fields["frames"])
                if words[0] == "done" and self.done_at is None:
                    self.done_at = time.monotonic()
                    self.done_reason = fields.get("reason")
            elif len(words) == 1 and "=" in words[0]:
                key, _, value = words[0].partition("=")
                self.urls[key] = value
                if "ws_url" in self.urls and "rest_url" in self.urls:
                    self._listening.set()
        self._listening.set()  # stdout closed: the process is gone

    @property
    def sent_frames(self) -> int:
        """Frames sent on all connections, as last reported."""
        return sum(self._sent.values())

    def wait_listening(self, timeout: float = FEED_TIMEOUT) -> tuple[str, str]:
        """Wait until the feed has built its frames and listens; ``(ws_url, rest_url)``:
        the base of every venue's WebSocket URL, and the REST base."""
        if not self._listening.wait(timeout) or "rest_url" not in self.urls:
            raise RuntimeError(f"the feed did not start; see {self._log.name}")
        return self.urls["ws_url"], self.urls["rest_url"]

    def ran_out_before(self, t: float) -> bool:
        """Whether a connection had been sent its last frame before ``t`` (monotonic)."""
        return self.done_reason == "end" and self.done_at is not None and self.done_at < t

    def close(self) -> None:
        _stop(self.proc)
        self._log.close()


class Relay:
    """``python -m relay run -c CONFIG`` as a child process, and a client of its sidecar."""

    def __init__(self, config: Path, http_port: int, log: Path) -> None:
        self.log = log
        with log.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "run", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_die_with_parent,
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5.0)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the relay exited with {self.proc.returncode}{self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        """The end of the relay's log, to explain a failure."""
        with contextlib.suppress(OSError):
            tail = self.log.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                return f"; {self.log} ends with:\n" + "\n".join(tail)
        return f"; see {self.log}"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for ``/readyz`` 200: NATS connected and streams provisioned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/readyz").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the relay was not ready within {timeout:g} s{self.log_tail()}")

    def metrics(self) -> Metrics:
        return Metrics.parse(self.http.get("/metrics").text)

    def worker_pids(self) -> dict[str, int]:
        """The worker processes' pids by worker number (``service.workers > 1``; none for
        a single process), from the parent's ``/health``."""
        workers = self.http.get("/health").json().get("workers", {})
        return {k: w["pid"] for k, w in workers.items() if w.get("pid")}

    def close(self) -> None:
        self.http.close()
        _stop(self.proc)


# ---------------------------------------------------------------------------------------------
# Samples and statistics


_BY_LABEL = {
    "relay_frames_received_total": "venue",
    "relay_published_messages_total": "venue",
    "relay_channel_depth": "channel",
    "relay_publish_errors_total": "reason",
    "relay_dropped_messages_total": "reason",
}
"""Samples also kept per value of one label, as ``<name>:<label value>``."""


@dataclass(slots=True)
class Metrics:
    """One scrape of the relay's ``/metrics``."""

    values: dict[str, float]
    """Each sample name summed over its labels, plus the :data:`_BY_LABEL` breakdowns."""
    buckets: list[tuple[float, float]]
    """``relay_puback_latency_seconds``: (upper bound, cumulative count), +Inf last."""

    @classmethod
    def parse(cls, text: str) -> Metrics:
        values: dict[str, float] = collections.defaultdict(float)
        buckets: dict[float, float] = collections.defaultdict(float)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "relay_puback_latency_seconds_bucket":
                    buckets[float(s.labels["le"])] += s.value
                    continue
                values[s.name] += s.value
                if (label := _BY_LABEL.get(s.name)) is not None:
                    values[f"{s.name}:{s.labels.get(label, '')}"] += s.value
        return cls(dict(values), sorted(buckets.items()))

    def by_label(self, name: str) -> dict[str, int]:
        """The :data:`_BY_LABEL` breakdown of ``name``: {label value: value}."""
        prefix = name + ":"
        return {
            k.removeprefix(prefix): int(v) for k, v in self.values.items() if k.startswith(prefix)
        }

    def get(self, name: str) -> float:
        return self.values.get(name, 0.0)


@dataclass(slots=True)
class Sample:
    t: float
    """``time.monotonic()`` when taken."""
    wall_ns: int
    """``time.time_ns()`` when taken: the clock of ``ts_recv`` and of JetStream."""
    metrics: Metrics
    cpu: dict[str, float]
    """CPU seconds used so far, by process: ``relay``, ``nats``, ``feed``."""


def rate(a: Sample, b: Sample, name: str) -> float:
    """Per second growth of counter ``name`` from sample ``a`` to ``b``."""
    return (b.metrics.get(name) - a.metrics.get(name)) / (b.t - a.t)


def quantile_from_buckets(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile of a cumulative histogram, linear within its bucket (Prometheus'
    ``histogram_quantile``); ``inf`` in the +Inf bucket, ``nan`` for an empty histogram."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank and cumulative > below:
            if math.isinf(upper):
                return math.inf
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return math.inf


def quantile_sorted(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of sorted ``values``; ``nan`` when empty."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# ---------------------------------------------------------------------------------------------
# What JetStream stored


class _Body(msgspec.Struct):
    ts_recv: int


def _ack_tokens(reply: str) -> tuple[int, int]:
    """(stored ns, pending) from a JetStream delivery's reply subject, in the 9-token form
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` or the longer
    one with ``<domain>.<account hash>`` after ``$JS.ACK``."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[7]), int(tokens[8])
    return int(tokens[9]), int(tokens[10])


async def _stored_latencies(url: str, start_ns: int, end_ns: int) -> list[float]:
    """Stored time minus ``ts_recv``, in seconds, of every data message whose frame the relay
    read within ``[start_ns, end_ns)``, read back with one ordered consumer per stream."""
    decode = msgspec.json.Decoder(_Body).decode
    out: list[float] = []
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in DATA_STREAMS:
            if not (await js.stream_info(stream)).state.messages:
                continue
            raw: list[tuple[str, bytes]] = []
            done = asyncio.Event()

            async def collect(
                msg: Msg, raw: list[tuple[str, bytes]] = raw, done: asyncio.Event = done
            ) -> None:
                raw.append((msg.reply, msg.data))
                if _ack_tokens(msg.reply)[1] == 0:
                    done.set()

            # A message read at start_ns was stored after it; start a second earlier still
            # rather than read the warm-up back too.
            begin = datetime.fromtimestamp(start_ns / 1e9 - 1.0, UTC)
            sub = await js.subscribe(
                STREAMS[stream],
                stream=stream,
                cb=collect,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_TIME,
                    opt_start_time=begin,
                    ack_policy=AckPolicy.NONE,
                ),
                pending_msgs_limit=-1,
                pending_bytes_limit=-1,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 60.0)
            await sub.unsubscribe()
            for reply, data in raw:
                recv = decode(data).ts_recv
                if start_ns <= recv < end_ns:
                    out.append((_ack_tokens(reply)[0] - recv) / 1e9)
    finally:
        await nc.close()
    out.sort()
    return out


# ---------------------------------------------------------------------------------------------
# Runs


def write_config(
    path: Path,
    nats_url: str,
    ws_url: str,
    rest_url: str,
    http_port: int,
    limits: Mapping[str, Mapping[str, int]] | None = None,
    *,
    workers: int = 1,
    venues: Sequence[str],
) -> Path:
    """A relay config like ``tests/test_e2e.py``'s, on the feed, logging warnings only.

    ``ws_url``, ``rest_url``: the feed's bases; each venue's ``ws_url`` is the first plus
    its path (:data:`feed.VENUES`). ``limits``: per stream name, more ``[[nats.streams]]``
    keys (``max_bytes``, ``max_age_secs``, ...); none by default, so the streams keep
    everything. ``workers``: ``service.workers``. ``venues``: names of :data:`feed.VENUES`,
    each declared with the instruments and data types of its captures; a name given again
    is declared again (``binance-2``, ...): the feed plays every connection its whole
    capture, so each copy gets its own, with its own subjects and message ids (nothing
    dedupes across venues).
    """
    limits = limits or {}
    entries = []
    for name, venue_id in zip(venues, venue_ids(venues), strict=True):
        venue = VENUES[name]
        subscriptions = "".join(
            f"\n[[venues.subscriptions]]\ninstruments = {json.dumps(list(instruments))}\n"
            f"data_types = {json.dumps(list(data_types))}\n"
            for instruments, data_types in venue.subscriptions
        )
        entries.append(
            f"""
[[venues]]
id = "{venue_id}"
adapter = "{venue.adapter}"

[venues.connection]
ws_url = "{ws_url}{venue.ws_path}"
rest_url = "{rest_url}"
{subscriptions}"""
        )
    streams = "".join(
        f'\n[[nats.streams]]\nname = "{name}"\nsubjects = ["{subject}"]\nstorage = "file"\n'
        + "".join(f"{key} = {value}\n" for key, value in limits.get(name, {}).items())
        for name, subject in STREAMS.items()
    )
    path.write_text(
        f"""
[service]
name = "relay-bench"
log_level = "warning"
log_format = "json"
shutdown_timeout_ms = 2000
workers = {workers}

[nats]
urls = ["{nats_url}"]
{streams}
[http]
bind = "127.0.0.1"
port = {http_port}
{"".join(entries)}"""
    )
    return path


def venue_ids(venues: Sequence[str]) -> list[str]:
    """The relay's venue ids for :data:`feed.VENUES` names: the name, then ``<name>-2``, ..."""
    seen: collections.Counter[str] = collections.Counter()
    out = []
    for name in venues:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def connections(venues: Sequence[str]) -> int:
    """WebSocket connections the relay opens to the feed for ``venues``: one per path."""
    return sum(len(VENUES[name].paths) for name in venues)


@dataclass(frozen=True, slots=True)
class RunSpec:
    name: str
    rate: float
    """Frames/s the feed sends in all, shared evenly by its connections; 0 = as fast as the
    relay reads."""
    seconds: float
    """Length of the measuring window."""
    warmup: float
    max_warmup: float
    """Saturated only: give up waiting for steady state after this long (0: do not wait)."""
    profile: Path | None = None
    """Record the relay with py-spy over the window, as collapsed stacks."""
    workers: int = 1
    """``service.workers`` of the relay."""
    venues: tuple[str, ...] = tuple(VENUES)
    """Venues on the feed (see :func:`write_config`)."""


@dataclass(slots=True)
class RunResult:
    spec: RunSpec
    samples: list[Sample]
    start: int
    """Index in :attr:`samples` of the window's first sample; the last one ends it."""
    steady: bool
    memory_kib: dict[str, int]
    feed_ran_out: bool
    stored_latencies: list[float] = field(default_factory=list)


def _steady(samples: list[Sample]) -> bool:
    if len(samples) <= STEADY_SECONDS:
        return False
    a, b = samples[-1 - STEADY_SECONDS], samples[-1]
    events = rate(a, b, "relay_events_total")
    stored = rate(a, b, "relay_published_messages_total")
    return events > 0 and stored >= STEADY_RATIO * events


@dataclass(slots=True)
class Processes:
    """The processes of one run, as :func:`processes` started them."""

    server: NatsServer
    feed: Feed
    relay: Relay
    pids: dict[str, int]
    """For ``/proc``: ``relay``, ``feed`` and, when known, ``nats``."""

    def wait_first_frame(self, timeout: float = READY_TIMEOUT) -> float:
        """Wait until the relay has read a frame; ``time.monotonic()`` then."""
        deadline = time.monotonic() + timeout
        while self.relay.metrics().get("relay_frames_received_total") == 0:
            self.relay.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no frame reached the relay{self.relay.log_tail()}")
            time.sleep(0.05)
        return time.monotonic()


@contextlib.contextmanager
def processes(
    name: str,
    tmp: Path,
    rate: float,
    feed_seconds: float,
    *,
    feed_command: Sequence[str] | None = None,
    limits: Mapping[str, Mapping[str, int]] | None = None,
    workers: int = 1,
    venues: Sequence[str],
) -> Iterator[Processes]:
    """nats-server (store ``tmp/<name>-nats``), the feed (``rate`` frames/s per connection
    for ``feed_seconds``; ``feed_command``: see :class:`Feed`, by default ``feed.py`` with
    ``venues``) and the relay on both (config ``tmp/<name>.toml`` with the stream
    ``limits``, ``workers`` and ``venues``), ready; all stopped on exit. With workers,
    ``pids`` has ``relay`` (the parent) and ``relay-worker<K>``: the relay's CPU is theirs
    together."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(NatsServer(tmp / f"{name}-nats"))
        command = feed_command or [sys.executable, str(FEED), "--venues", ",".join(venues)]
        feed = Feed(rate, feed_seconds, tmp / f"{name}-feed.log", command)
        stack.callback(feed.close)
        ws_url, rest_url = feed.wait_listening()
        http_port = free_port()
        config = write_config(
            tmp / f"{name}.toml",
            server.url,
            ws_url,
            rest_url,
            http_port,
            limits,
            workers=workers,
            venues=venues,
        )
        relay = Relay(config, http_port, tmp / f"{name}-relay.log")
        stack.callback(relay.close)
        relay.wait_ready()
        pids = {"relay": relay.proc.pid, "feed": feed.proc.pid}
        pids.update({f"relay-worker{k}": pid for k, pid in relay.worker_pids().items()})
        # NatsServer keeps its process private; its pid is only read, for /proc.
        nats_proc: subprocess.Popen[bytes] | None = getattr(server, "_proc", None)
        if nats_proc is not None:
            pids["nats"] = nats_proc.pid
        yield Processes(server, feed, relay, pids)


def run(spec: RunSpec, tmp: Path) -> RunResult:
    """One run with fresh processes, sampled every second."""
    name = spec.name
    _say(f"[{name}] starting nats-server, feed and relay")
    # The feed streams a little longer than the run can last, then idles.
    feed_seconds = spec.max_warmup + spec.warmup + spec.seconds + 10
    per_connection = spec.rate / connections(spec.venues)
    with processes(
        name, tmp, per_connection, feed_seconds, workers=spec.workers, venues=spec.venues
    ) as procs:
        server, feed, relay, pids = procs.server, procs.feed, procs.relay, procs.pids
        first = procs.wait_first_frame()
        samples: list[Sample] = []

        def sample() -> None:
            # On a fixed grid from the first frame: a slow scrape does not shift the others.
            time.sleep(max(0.0, first + len(samples) * SAMPLE_EVERY - time.monotonic()))
            t, wall = time.monotonic(), time.time_ns()
            cpu = {proc: cpu_seconds(pid) for proc, pid in pids.items()}
            samples.append(Sample(t, wall, relay.metrics(), cpu))
            relay.check_alive()

        while len(samples) * SAMPLE_EVERY <= spec.warmup:
            sample()
        if spec.max_warmup > 0:
            _say(f"[{name}] waiting for steady state (stored msgs/s = frames/s)")
            while not _steady(samples) and samples[-1].t - first < spec.max_warmup:
                sample()
        steady = spec.max_warmup <= 0 or _steady(samples)
        start = len(samples) - 1
        _say(f"[{name}] measuring for {spec.seconds:g} s from {samples[start].t - first:.0f} s")
        # With workers, worker 0: the parent only serves the sidecar.
        profiled = pids.get("relay-worker0", relay.proc.pid)
        profiler = _start_profiler(spec.profile, profiled, spec.seconds)
        while samples[-1].t - samples[start].t < spec.seconds - SAMPLE_EVERY / 2:
            sample()
        if profiler is not None:
            profiler.wait()
        # With workers, the sum over the relay's processes.
        relay_memory = [memory_kib(pid) for proc, pid in pids.items() if _is_relay(proc)]
        memory = {key: sum(m.get(key, 0) for m in relay_memory) for key in ("VmHWM", "VmRSS")}
        ran_out = feed.ran_out_before(samples[-1].t)
        feed.close()
        relay.close()
        result = RunResult(spec, samples, start, steady, memory, ran_out)
        if spec.rate > 0:
            _say(f"[{name}] reading the window's messages back from JetStream")
            result.stored_latencies = asyncio.run(
                _stored_latencies(server.url, samples[start].wall_ns, samples[-1].wall_ns)
            )
    return result


def _is_relay(proc: str) -> bool:
    """Whether a ``pids`` key is the relay: ``relay`` (the parent, or the only process) or
    ``relay-worker<K>``."""
    return proc == "relay" or proc.startswith("relay-")


def _py_spy() -> str | None:
    """The py-spy binary: beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def _start_profiler(path: Path | None, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    py_spy = _py_spy()
    if path is None or py_spy is None:
        return None
    # --gil: sample only the thread holding the GIL, i.e. where the relay's Python time goes.
    cmd = [py_spy, "record", "--gil", "--format", "raw", "-o", str(path)]
    cmd += ["--duration", str(max(1, round(seconds))), "--pid", str(pid)]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def top_own_time(path: Path, n: int) -> list[tuple[float, str]]:
    """The ``n`` functions with the most own time in py-spy's collapsed stacks, all lines of
    a function together: (share of the samples, ``function (file)``)."""
    own: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            leaf = stack.rpartition(";")[2]  # "function (path/file.py:line)"
            function, _, where = leaf.partition(" (")
            own[f"{function} ({where.rpartition(':')[0] or where.rstrip(')')})"] += int(count)
    total = sum(own.values())
    return [(k / total, f) for f, k in own.most_common(n)] if total else []


def summarize(result: RunResult) -> dict[str, Any]:
    """The figures of one run, from the samples of its window."""
    spec = result.spec
    window = result.samples[result.start :]
    a, b = window[0], window[-1]
    seconds = b.t - a.t

    def delta(name: str) -> float:
        return b.metrics.get(name) - a.metrics.get(name)

    frames = delta("relay_frames_received_total")
    stored = delta("relay_published_messages_total")
    each_second = [rate(x, y, "relay_frames_received_total") for x, y in itertools.pairwise(window)]
    cpu = {proc: b.cpu[proc] - a.cpu[proc] for proc in b.cpu}
    relay_cpu = sum(seconds_used for proc, seconds_used in cpu.items() if _is_relay(proc))
    out: dict[str, Any] = {
        "workers": spec.workers,
        "venues": venue_ids(spec.venues),
        "venue_count": len(spec.venues),
        "connections": connections(spec.venues),
        "target_frames_per_s": spec.rate or None,
        "warmup_s": round(a.t - result.samples[0].t, 1),
        "steady": result.steady,
        "window_s": round(seconds, 2),
        "frames": int(frames),
        "frames_per_s": round(frames / seconds),
        "frames_per_s_min": round(min(each_second)),
        "frames_per_s_max": round(max(each_second)),
        "published_msgs": int(stored),
        "published_msgs_per_s": round(stored / seconds),
        "duplicates": int(delta("relay_published_duplicates_total")),
        "backlog_growth_msgs_per_s": round((delta("relay_events_total") - stored) / seconds),
        "venue_channel_depth_end": int(b.metrics.get("relay_channel_depth:venue_events")),
        "messages_channel_depth_end": int(b.metrics.get("relay_channel_depth:messages")),
        "in_flight_max": int(max(s.metrics.get("relay_publish_in_flight") for s in window)),
        "relay_cpu_s": round(relay_cpu, 2),
        "relay_cpu_percent": round(100 * relay_cpu / seconds),
        "relay_cpu_s_per_million_frames": round(1e6 * relay_cpu / frames, 1) if frames else None,
        "nats_cpu_percent": round(100 * cpu["nats"] / seconds) if "nats" in cpu else None,
        "feed_cpu_percent": round(100 * cpu["feed"] / seconds),
        "relay_peak_rss_mib": round(result.memory_kib.get("VmHWM", 0) / 1024, 1),
        "feed_ran_out": result.feed_ran_out,
    }
    if spec.workers > 1:
        out["relay_cpu_percent_by_process"] = {
            proc: round(100 * used / seconds) for proc, used in cpu.items() if _is_relay(proc)
        }
    if spec.rate:
        out["kept_up"] = frames / seconds >= KEPT_UP_RATIO * spec.rate

    def per_venue(name: str) -> dict[str, int]:
        before = a.metrics.by_label(name)
        return {v: n - before.get(v, 0) for v, n in b.metrics.by_label(name).items()}

    venue_frames = per_venue("relay_frames_received_total")
    venue_stored = per_venue("relay_published_messages_total")
    out["by_venue"] = {
        venue: {
            "frames_per_s": round(venue_frames.get(venue, 0) / seconds),
            "published_msgs_per_s": round(venue_stored.get(venue, 0) / seconds),
        }
        for venue in venue_ids(spec.venues)
    }
    # Totals since start; anything but zero means these are not the figures of a clean run.
    for name in (
        "relay_book_gaps_total",
        "relay_book_resyncs_total",
        "relay_checksum_failures_total",
        "relay_parse_errors_total",
        "relay_reconnects_total",
        "relay_dropped_messages_total",
        "relay_publish_errors_total",
        "relay_publish_retries_total",
        "relay_published_duplicates_total",
    ):
        out[name.removeprefix("relay_").removesuffix("_total")] = int(b.metrics.get(name))
    for name in ("relay_publish_errors_total", "relay_dropped_messages_total"):
        if by := b.metrics.by_label(name):
            out[name.removeprefix("relay_").removesuffix("_total") + "_by_reason"] = by
    buckets = [
        (le, n1 - n0)
        for (le, n1), (_, n0) in zip(b.metrics.buckets, a.metrics.buckets, strict=True)
    ]
    top = max((le for le, _ in buckets if not math.isinf(le)), default=math.inf)
    out["puback_latency_ms"] = {
        _q_name(q): _ms(quantile_from_buckets(buckets, q), top) for q in QUANTILES
    }
    out["puback_latency_ms"]["observations"] = int(buckets[-1][1]) if buckets else 0
    if lat := result.stored_latencies:
        out["recv_to_stored_ms"] = {_q_name(q): _ms(quantile_sorted(lat, q)) for q in QUANTILES}
        out["recv_to_stored_ms"]["max"] = _ms(lat[-1])
        out["recv_to_stored_ms"]["messages"] = len(lat)
    return out


def _q_name(q: float) -> str:
    return "p" + f"{100 * q:g}".replace(".", "_")


def _ms(seconds: float, top: float = math.inf) -> float | str | None:
    """Milliseconds, rounded to the microsecond; a quantile in the histogram's +Inf bucket
    becomes the string ``">TOP"`` (``top``: the highest finite bound, in seconds)."""
    if math.isnan(seconds):
        return None
    if math.isinf(seconds):
        return f">{top * 1000:g}"
    return round(seconds * 1000, 3)


# ---------------------------------------------------------------------------------------------
# Output


def environment() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    nats_version = subprocess.run(
        [find_nats_server(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    # Which relay code ran: the figures are only comparable between runs of the same code.
    source = Path(relay.__file__).resolve().parent.parent
    git = ["git", "-C", str(source)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    # Read-only (unlike git status, git diff never rewrites the index).
    dirty = subprocess.run(
        [*git, "diff", "--quiet", "HEAD", "--", "relay", "adapters"],
        capture_output=True,
        check=False,
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "nats_server": nats_version,
        "storage": "file",
        "relay_source": str(source),
        "relay_commit": commit.stdout.strip() or None,
        "relay_modified": dirty.returncode == 1 if commit.returncode == 0 else None,
    }


_ROWS: list[tuple[str, str, str]] = [
    # (label, key or "key.sub", format)
    ("relay worker processes", "workers", "{}"),
    ("venues on the feed", "venue_count", "{}"),
    ("feed connections", "connections", "{}"),
    ("feed target, frames/s", "target_frames_per_s", "{:,.0f}"),
    ("warm-up, s", "warmup_s", "{:.0f}"),
    ("steady state reached", "steady", "{}"),
    ("measuring window, s", "window_s", "{:.0f}"),
    ("frames/s", "frames_per_s", "{:,.0f}"),
    ("  slowest second", "frames_per_s_min", "{:,.0f}"),
    ("  fastest second", "frames_per_s_max", "{:,.0f}"),
    ("stored msgs/s", "published_msgs_per_s", "{:,.0f}"),
    ("backlog growth, msgs/s", "backlog_growth_msgs_per_s", "{:,.0f}"),
    ("duplicates", "duplicates", "{:,.0f}"),
    ("kept up with the feed", "kept_up", "{}"),
    ("relay CPU, % of a core", "relay_cpu_percent", "{:.0f}"),
    ("  parent", "relay_cpu_percent_by_process.relay", "{:.0f}"),
    ("  worker 0", "relay_cpu_percent_by_process.relay-worker0", "{:.0f}"),
    ("  worker 1", "relay_cpu_percent_by_process.relay-worker1", "{:.0f}"),
    ("relay CPU s per million frames", "relay_cpu_s_per_million_frames", "{:,.0f}"),
    ("nats-server CPU, % of a core", "nats_cpu_percent", "{:.0f}"),
    ("feed CPU, % of a core", "feed_cpu_percent", "{:.0f}"),
    ("relay peak RSS, MiB (all its processes)", "relay_peak_rss_mib", "{:.0f}"),
    ("PubAcks outstanding, max", "in_flight_max", "{:,.0f}"),
    ("recv → PubAck p50, ms (histogram)", "puback_latency_ms.p50", "{:,.2f}"),
    ("recv → PubAck p90, ms (histogram)", "puback_latency_ms.p90", "{:,.2f}"),
    ("recv → PubAck p99, ms (histogram)", "puback_latency_ms.p99", "{:,.2f}"),
    ("recv → PubAck p99.9, ms (histogram)", "puback_latency_ms.p99_9", "{:,.2f}"),
    ("recv → stored p50, ms (JetStream)", "recv_to_stored_ms.p50", "{:,.2f}"),
    ("recv → stored p90, ms (JetStream)", "recv_to_stored_ms.p90", "{:,.2f}"),
    ("recv → stored p99, ms (JetStream)", "recv_to_stored_ms.p99", "{:,.2f}"),
    ("recv → stored p99.9, ms (JetStream)", "recv_to_stored_ms.p99_9", "{:,.2f}"),
    ("recv → stored max, ms (JetStream)", "recv_to_stored_ms.max", "{:,.2f}"),
    ("book gaps", "book_gaps", "{:,.0f}"),
    ("book resyncs", "book_resyncs", "{:,.0f}"),
    ("checksum failures", "checksum_failures", "{:,.0f}"),
    ("dropped messages", "dropped_messages", "{:,.0f}"),
    ("publish errors", "publish_errors", "{:,.0f}"),
    ("publish retries", "publish_retries", "{:,.0f}"),
    ("duplicates since the start", "published_duplicates", "{:,.0f}"),
    ("feed ran out of frames", "feed_ran_out", "{}"),
]


def table(results: dict[str, Any]) -> str:
    """The runs' figures side by side, one row per figure."""
    runs = [name for name in ("saturated", "paced") if name in results]
    venues = dict.fromkeys(v for name in runs for v in results[name].get("by_venue", {}))
    rows = list(_ROWS)
    # Per venue, after the totals they add up to.
    at = next(i for i, (_, key, _) in enumerate(rows) if key == "published_msgs_per_s") + 1
    rows[at:at] = [
        (f"  {venue}, {what}", f"by_venue.{venue}.{key}", "{:,.0f}")
        for venue in venues
        for what, key in (("frames/s", "frames_per_s"), ("stored msgs/s", "published_msgs_per_s"))
    ]
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'':{width}}" + "".join(f"  {name:>12}" for name in runs)]
    for label, key, fmt in rows:
        cells = []
        for name in runs:
            value: Any = results[name]
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            cells.append(
                "-" if value is None else value if isinstance(value, str) else fmt.format(value)
            )
        if any(cell != "-" for cell in cells):
            lines.append(f"{label:{width}}" + "".join(f"  {cell:>12}" for cell in cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/bench.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        help=f"measuring window of each run (default: {SATURATED_SECONDS:g} s saturated, "
        f"{PACED_SECONDS:g} s paced)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP,
        help=f"seconds from the first frame to the window, at least (default: {WARMUP:g})",
    )
    parser.add_argument(
        "--max-warmup",
        type=float,
        default=MAX_WARMUP,
        help="saturated run: longest wait for steady state; 0 = do not wait "
        f"(default: {MAX_WARMUP:g})",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=PACED_RATE,
        help="frames/s of the paced run, in all, shared evenly by the feed's connections "
        f"(default: {PACED_RATE:g})",
    )
    parser.add_argument("--skip-saturated", action="store_true", help="no saturated run")
    parser.add_argument("--skip-paced", action="store_true", help="no paced run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures here too")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="saturated run: record the relay with py-spy (pip install py-spy) over the "
        "window, as collapsed stacks in PATH, and print the top functions by own time "
        "(the sampling slows the relay down: its figures are marked profiled)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="service.workers of the relay (default: 1, a single process)",
    )
    parser.add_argument(
        "--venues",
        default=",".join(VENUES),
        help=f"comma-separated venues of the feed, of {', '.join(VENUES)}; one named "
        "again is declared again, with its own copy of the capture (default: all of them, "
        "once; --venues binance: the Binance spot capture alone)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (configs, logs, JetStream stores)"
    )
    parser.add_argument(
        "--ceilings",
        action="store_true",
        help="after the runs, measure the machine's ceilings (bare WebSocket clients on the "
        "feed, the publisher alone into nats-server) and the relay's share of them "
        "(bench/ceilings.py)",
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, so every process gets stopped


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.seconds is not None and args.seconds < 2:
        parser.error("--seconds must be at least 2")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be in 1..64")
    venues = tuple(name for name in args.venues.split(",") if name)
    if not venues or any(name not in VENUES for name in venues):
        parser.error(f"--venues takes names from {', '.join(VENUES)}")
    if args.profile and _py_spy() is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    signal.signal(signal.SIGTERM, _interrupt)
    results: dict[str, Any] = {"environment": environment()}
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    keep = args.keep
    try:
        if not args.skip_saturated:
            spec = RunSpec(
                "saturated",
                0.0,
                args.seconds or SATURATED_SECONDS,
                args.warmup,
                args.max_warmup,
                args.profile,
                workers=args.workers,
                venues=venues,
            )
            results["saturated"] = summarize(run(spec, tmp))
            if args.profile:
                results["saturated"]["profiled"] = True
        if not args.skip_paced:
            spec = RunSpec(
                "paced",
                args.rate,
                args.seconds or PACED_SECONDS,
                args.warmup,
                0.0,
                workers=args.workers,
                venues=venues,
            )
            results["paced"] = summarize(run(spec, tmp))
        if args.ceilings:
            import ceilings  # bench/ceilings.py (this file runs as a script from bench/)

            results["ceilings"] = ceilings.measure(tmp)
            results["ceilings"]["relay_share"] = ceilings.ratios(results)
    except KeyboardInterrupt:
        _say("bench: interrupted")
        return 130
    except (RuntimeError, OSError) as exc:
        _say(f"bench: {exc}")
        keep = True
        return 1
    finally:
        if keep:
            _say(f"bench: configs, logs and stores kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(results))
    if "ceilings" in results:
        print("\n" + ceilings.table(results))
    if args.profile and args.profile.exists():
        print(f"\nrelay, saturated: top functions by own time (py-spy --gil, {args.profile})")
        for share, function in top_own_time(args.profile, 15):
            print(f"  {100 * share:5.1f}%  {function}")
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
