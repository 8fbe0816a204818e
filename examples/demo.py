"""The whole relay, offline, in one command (``just demo``, ``./dev demo``): about 15 seconds.

1. a throwaway JetStream ``nats-server`` on a free loopback port, its store in a temp dir;
2. a replay venue (``relay replay``) serving a recorded Binance session
   (``tests/data/cryptofeed/BINANCE.ws.1.0`` and its REST depth snapshots) at 3x its pace;
3. a relay config pointing the ``binance`` venue at that replay, and ``relay run`` on it;
4. a plain NATS subscriber on ``market.>`` that prints the first messages of each type as
   the relay publishes them (subject, ``Nats-Msg-Id``, body);
5. once the whole capture went through: what each stream stored, the books rebuilt from
   ``MARKET_BOOKS`` with ``examples/consumer.py``'s logic, and ``/health``;
6. SIGTERM to the relay (it drains and exits 0), then everything is stopped and removed.

Ctrl-C at any point stops every process this script started and removes the temp dir
(``--keep`` keeps it, with the relay's log and config, to look at afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
import nats
from consumer import Books, top_line  # examples/consumer.py: this script's directory is on path
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from relay.captures import load
from relay.natsd import NatsServer, free_port

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "tests" / "data" / "cryptofeed" / "BINANCE.ws.1.0"
SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
STREAMS = {
    "MARKET_TRADES": "market.*.*.trade",
    "MARKET_TICKERS": "market.*.*.ticker",
    "MARKET_BOOKS": "market.*.*.l2_orderbook",
    "MARKET_STATUS": "market.*._status",
}
SHOW = {"trade": 3, "ticker": 2, "l2_snapshot": 2, "l2_delta": 3, "status": 4}
"""How many messages of each type to print as they arrive."""
LEVELS_SHOWN = 2
"""Book levels printed per side of a snapshot or delta; the rest are summarized."""

START_TIMEOUT = 20.0
"""Seconds for the replay venue to print its URLs and for the relay to become ready."""
STOP_TIMEOUT = 15.0
"""Seconds a child gets to exit after SIGTERM before it is killed."""
PROGRESS_EVERY = 2.0
"""Seconds between progress lines while the capture plays."""
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def say(text: str = "") -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------
# Child processes


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM ``proc`` unless it has exited, wait, SIGKILL if it will not go; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def child(
    cmd: list[str], log: Path, stdout: int = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[str]]:
    """Run ``cmd`` with stderr appended to ``log``; stop it (if still running) on the way out."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, text=True
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def read_urls(proc: subprocess.Popen[str]) -> dict[str, str]:
    """The ``ws_url=``/``rest_url=`` lines ``relay replay`` prints once it listens."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump(stream: IO[str]) -> None:
        # A thread, so that a replay venue that never prints cannot hang the demo: the main
        # thread waits on the queue with a deadline.
        for line in stream:
            lines.put(line)
        lines.put("")  # end of output

    threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    urls: dict[str, str] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while len(urls) < 2:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"the replay venue printed no URLs in {START_TIMEOUT:g} s") from None
        if not line:
            raise RuntimeError(f"the replay venue exited with {proc.wait()}")
        key, sep, value = line.strip().partition("=")
        if sep and key in ("ws_url", "rest_url"):
            urls[key] = value
    return urls


def write_config(path: Path, nats_url: str, ws_url: str, rest_url: str, http_port: int) -> None:
    streams = "".join(
        f'\n[[nats.streams]]\nname = "{name}"\nsubjects = ["{subject}"]\n'
        for name, subject in STREAMS.items()
    )
    path.write_text(
        f"""# Written by examples/demo.py: the binance venue reads a local replay of a capture.
[service]
name = "relay-demo"
log_format = "console"
shutdown_timeout_ms = 5000

[nats]
urls = ["{nats_url}"]
{streams}
[http]
bind = "127.0.0.1"
port = {http_port}

[[venues]]
id = "binance"
adapter = "binance"

[venues.connection]
ws_url = "{ws_url}"
rest_url = "{rest_url}"

[[venues.subscriptions]]
instruments = {json.dumps(SYMBOLS)}
data_types = ["trade", "ticker", "l2_orderbook"]
"""
    )


# ---------------------------------------------------------------------------------------------
# Watching, over NATS and HTTP (asyncio: nats-py is asyncio-only)


def shorten(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with long ``bids``/``asks`` lists cut to their first levels, for printing."""
    out = dict(body)
    for side in ("bids", "asks"):
        levels = out.get(side)
        if isinstance(levels, list) and len(levels) > LEVELS_SHOWN:
            out[side] = [*levels[:LEVELS_SHOWN], f"... {len(levels) - LEVELS_SHOWN} more"]
    return out


class Printer:
    """Core NATS subscriber: counts every message and prints the first few of each type.

    Messages that arrive before :meth:`go_live` are held back, so that they print after the
    "ready" line rather than in the middle of the start-up report.
    """

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self._held: list[tuple[str, str, dict[str, Any]]] | None = []

    async def on_message(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        kind = body.get("type", "?")
        self.seen[kind] += 1
        if self.seen[kind] > SHOW.get(kind, 1):
            return
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "-")
        if self._held is None:
            self._print(msg.subject, msg_id, body)
        else:
            self._held.append((msg.subject, msg_id, body))

    def go_live(self) -> None:
        """Print what was held back, and from now on print as messages arrive."""
        held, self._held = self._held or [], None
        for item in held:
            self._print(*item)

    @staticmethod
    def _print(subject: str, msg_id: str, body: dict[str, Any]) -> None:
        say(f"  {body.get('type', '?'):<11} {subject}   Nats-Msg-Id: {msg_id}")
        say(f"  {'':<11} {json.dumps(shorten(body))}")


async def wait_ready(http: httpx.AsyncClient, base: str, relay: subprocess.Popen[str]) -> float:
    """Poll ``/readyz`` until it answers 200; the seconds that took."""
    start = time.monotonic()
    while time.monotonic() - start < START_TIMEOUT:
        if relay.poll() is not None:
            raise RuntimeError(f"the relay exited with {relay.returncode} before it was ready")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get(f"{base}/readyz")).status_code == 200:
                return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the relay was not ready within {START_TIMEOUT:g} s")


async def stream_counts(js: JetStreamContext) -> dict[str, int]:
    """Messages held by each of the demo's streams."""
    return {name: (await js.stream_info(name)).state.messages for name in STREAMS}


async def wait_done(
    http: httpx.AsyncClient,
    base: str,
    js: JetStreamContext,
    relay: subprocess.Popen[str],
    frames: int,
    timeout: float,
) -> dict[str, int]:
    """Wait until the relay has read all ``frames`` and the streams stop growing.

    Prints progress every couple of seconds. Returns the final message count per stream.
    """
    start = time.monotonic()
    last_progress = start
    previous: dict[str, int] = {}
    while time.monotonic() - start < timeout:
        if relay.poll() is not None:
            raise RuntimeError(f"the relay exited with {relay.returncode} while streaming")
        health = (await http.get(f"{base}/health")).json()
        received = health["venues"]["binance"]["frames"]
        counts = await stream_counts(js)
        now = time.monotonic()
        if now - last_progress >= PROGRESS_EVERY:
            last_progress = now
            stored = ", ".join(f"{name} {n}" for name, n in counts.items())
            say(f"  [{now - start:4.1f} s] frames read {received}/{frames}; stored: {stored}")
        nats_state = health["nats"]
        settled = nats_state["in_flight"] == 0 and nats_state["backlog"] == 0
        if received >= frames and settled and counts == previous:
            return counts
        previous = counts
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the capture did not go through within {timeout:g} s")


async def rebuild_books(js: JetStreamContext) -> Books:
    """Read ``MARKET_BOOKS`` from the start with an ordered consumer into a :class:`Books`."""
    books = Books()
    sub = await js.subscribe(STREAMS["MARKET_BOOKS"], stream="MARKET_BOOKS", ordered_consumer=True)
    try:
        while True:
            msg = await sub.next_msg(timeout=5)
            books.on_message(json.loads(msg.data))
            if msg.metadata.num_pending == 0:
                return books
    except NatsTimeoutError:
        raise RuntimeError("MARKET_BOOKS went quiet before its last message") from None
    finally:
        await sub.unsubscribe()


async def watch(
    stack: contextlib.ExitStack,
    nats_url: str,
    config: Path,
    http_port: int,
    frames: int,
    timeout: float,
) -> subprocess.Popen[str]:
    """Start the relay (stopped by ``stack``), show what it publishes and stores, and return
    it still running."""

    async def quiet(exc: Exception) -> None:
        pass  # a lost server surfaces as an error from the next call; no traceback per event

    # No reconnecting: if nats-server goes away (Ctrl-C reaches it too), the demo is over.
    nc = await nats.connect(nats_url, name="relay-demo", allow_reconnect=False, error_cb=quiet)
    try:
        printer = Printer()
        # Subscribed before the relay starts, so that even its first message is seen; a core
        # subscription gets each message as it is published, whatever the streams do with it.
        await nc.subscribe("market.>", cb=printer.on_message)
        await nc.flush()
        relay_log = config.with_name("relay.log")
        relay = stack.enter_context(
            child([sys.executable, "-m", "relay", "run", "-c", str(config)], relay_log)
        )
        base = f"http://127.0.0.1:{http_port}"
        say(f"* relay         pid {relay.pid}, config {config}, log {relay_log}")
        async with httpx.AsyncClient(timeout=5) as http:
            took = await wait_ready(http, base, relay)
            say(f"* ready         GET {base}/readyz -> 200 after {took:.1f} s")
            say()
            say("Messages as the relay publishes them (the first few of each type):")
            printer.go_live()
            js = nc.jetstream()
            counts = await wait_done(http, base, js, relay, frames, timeout)
            await nc.flush()
            say()
            say("Stored in JetStream (each message once, by its Nats-Msg-Id):")
            for name, n in counts.items():
                say(f"  {name:<15} {n:>4} messages")
            say("Published, by type (as the subscriber saw them):")
            say("  " + ", ".join(f"{kind} {n}" for kind, n in sorted(printer.seen.items())))
            say()
            books = await rebuild_books(js)
            say("Books rebuilt from MARKET_BOOKS with examples/consumer.py's logic:")
            for key, book in sorted(books.books.items()):
                say(f"  {top_line(key, book)}  deltas applied: {book.deltas_applied}")
            say(f"  chain breaks: {len(books.breaks) or 'none'}")
            say()
            health = await http.get(f"{base}/health")
            say(f"GET {base}/health -> {health.status_code}")
            say("  " + json.dumps(health.json(), indent=2).replace("\n", "\n  "))
    finally:
        await nc.close()
    return relay


# ---------------------------------------------------------------------------------------------


def run(workdir: Path, speed: float) -> int:
    recording = load(CAPTURE)
    frames = len(recording.received)
    span = (recording.received[-1].ts - recording.received[0].ts) / 1e9
    say(
        f"relay demo: {CAPTURE.name}, {frames} frames over {span:.0f} s recorded, "
        f"replayed at {speed:g}x; everything on 127.0.0.1, files in {workdir}"
    )
    say()
    with contextlib.ExitStack() as stack:
        # Unwinding the stack stops the children; a second Ctrl-C must not cut that short, so
        # SIGINT is ignored from the end of the body until the stack is unwound.
        stack.callback(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))
        try:
            code = _run_children(stack, workdir, speed, frames, span)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    say("Stopped the replay venue and nats-server.")
    return code


def _run_children(
    stack: contextlib.ExitStack, workdir: Path, speed: float, frames: int, span: float
) -> int:
    """Start everything (each stopped by ``stack``), watch, and stop the relay by SIGTERM."""
    server = stack.enter_context(NatsServer(workdir / "nats"))
    say(f"* nats-server   {server.url} (JetStream, store {server.store_dir})")

    replay_log = workdir / "replay.log"
    replay = stack.enter_context(
        child(
            [
                sys.executable,
                "-m",
                "relay",
                "replay",
                str(CAPTURE),
                "--speed",
                str(speed),
            ],
            replay_log,
            stdout=subprocess.PIPE,
        )
    )
    urls = read_urls(replay)
    say(f"* replay venue  {urls['ws_url']} + {urls['rest_url']} (REST depth snapshots)")

    config = workdir / "relay.toml"
    http_port = free_port()
    write_config(config, server.url, urls["ws_url"], urls["rest_url"], http_port)
    # Recorded duration at this speed, plus room for connecting and the REST snapshots.
    relay = asyncio.run(watch(stack, server.url, config, http_port, frames, span / speed + 30))

    say()
    say(f"Sending SIGTERM to the relay (pid {relay.pid}) ...")
    started = time.monotonic()
    code = stop_process(relay)  # SIGTERM, and only once: a second one would kill it outright
    say(f"  relay exited with {code} after {time.monotonic() - started:.1f} s; its last words:")
    lines = config.with_name("relay.log").read_text(errors="replace").splitlines()
    for line in lines[-2:]:
        # The console log format colours its output; a pipe or a file would show the escapes.
        say(f"  | {ANSI_ESCAPE.sub('', line).rstrip()}")
    return 0 if code == 0 else 1


class _Interrupted:
    """SIGINT handler that remembers it fired, then interrupts as Python's default one does.

    Installed instead of the default so that :func:`asyncio.run` leaves SIGINT alone: the
    KeyboardInterrupt then unwinds through the event loop (whose tasks are cancelled and
    finish their ``finally`` blocks) and the ExitStack that stops the children. The flag
    tells an interrupt from a failure it caused: Ctrl-C also reaches the children, so the
    demo may trip over a vanished nats-server before the KeyboardInterrupt arrives.
    """

    fired = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.fired = True
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit status is 0 when the relay exited 0, 130 after Ctrl-C, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--speed", type=float, default=3.0, help="replay pace, x the recorded one (default: 3)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (config, logs, NATS store)"
    )
    args = parser.parse_args(argv)
    if not args.speed > 0:
        parser.error("--speed must be positive")
    interrupted = _Interrupted()
    signal.signal(signal.SIGINT, interrupted)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="relay-demo-"))
    code = 1
    try:
        code = run(workdir, args.speed)
    except Exception as exc:
        if not interrupted.fired:
            print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            for log in sorted(workdir.glob("*.log")):
                tail = ANSI_ESCAPE.sub("", log.read_text(errors="replace"))[-3000:]
                print(f"--- {log.name} (last lines) ---\n{tail}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        if args.keep:
            say(f"Kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if interrupted.fired:
        # run()'s ExitStack has stopped every child on the way out.
        say("\ninterrupted: everything this demo started is stopped")
        return 130
    if code == 0:
        say(f"Done in {time.monotonic() - started:.1f} s.")
    return code


if __name__ == "__main__":
    sys.exit(main())
