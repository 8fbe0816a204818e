"""The benchmark's venue: a fast loopback Binance stand-in, run as its own process.

``bench/bench.py`` points the relay's ``ws_url`` and ``rest_url`` at this process. It must
never be what limits the measured rate, so it does as little as possible while it streams:
every WebSocket frame is built once, before listening, into one big buffer of ready-to-send
bytes, and streaming is nothing but ``sendall`` of slices of that buffer on a plain
blocking socket. (The in-tree :mod:`relay.replay` venue, on trio-websocket, tops out near
12k frames/s, which would cap what the bench can show.)

**Frames.** The real Binance capture ``tests/data/cryptofeed/BINANCE.ws.1.0`` (loaded with
:func:`relay.captures.load`), played in passes with its venue ids shifted on every pass, so
that every frame is new to JetStream (a repeated id would only be a duplicate hit) and each
symbol's depth chain runs on across passes. Per symbol, pass ``k`` adds ``k * span`` to:

* depth diffs' ``U`` and ``u``, with ``span`` the width of the pass's chain of update ids
  (``max(u) - min(U) + 1``): the capture's diffs chain exactly (``U == previous u + 1``),
  so pass ``k + 1`` starts right where pass ``k`` ended;
* bookTicker ``u``, by the same ``span`` (same update-id space; the capture's ticker ids lie
  inside the depth range, so no two passes share one);
* aggTrade ``a``, ``f`` and ``l``, with ``span = max(a) - min(a) + 1`` (``@trade`` ``t``
  likewise, with its own span).

Each pass ends every symbol's chain with one extra, restoring diff (see
:func:`_restoring_diff`), so that every pass is applied to the same book and no pass
crosses it. Kline frames are dropped (the relay does not subscribe to them), and so is
anything else without an id to shift. Frames are re-encoded compactly with msgspec.

**REST.** ``GET /api/v3/depth?symbol=X`` answers with the recorded snapshot body of ``X``
(``lastUpdateId`` unshifted): the relay asks when it sees the symbol's first diff, which
is in pass 0, and follows the chain from there.

**WebSocket** (any path): answer the upgrade, wait for the client's first frame (the
subscribe request), then stream, either as fast as the socket takes it (``--rate 0``, in
256 KiB writes) or paced at ``--rate`` frames/s (every ``--tick``, 1 ms by default, all
frames due by then). A reader thread consumes the client's frames so that its side never
fills up, answers pings, and ends the stream on a close frame. After the last frame (or
``--duration``) the connection stays open and silent until the client leaves or the
process ends. Every connection gets its own playback from the start of the buffer.

**Output** on stdout, one line each, flushed: ``ws_url=...`` and ``rest_url=...`` once
listening; then per connection ``streaming conn=N``, about every second
``sent conn=N frames=F bytes=B seconds=S``, and at the end
``done conn=N frames=F bytes=B seconds=S reason=end|duration|closed``. On stderr, one line
about the buffer built.

Runs until SIGTERM or SIGINT, or until the process that started it is gone.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import signal
import socket
import struct
import sys
import threading
import time
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from relay.captures import Recording, load

CAPTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "cryptofeed"
DEFAULT_CAPTURE = CAPTURE / "BINANCE.ws.1.0"

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 section 1.3: the accept token is base64(sha1(key + this GUID))."""
CHUNK = 256 * 1024
"""Bytes per ``sendall`` at full speed: few syscalls, and the kernel buffer stays full."""
TICK = 0.001
"""Seconds between two writes when paced (``--tick``)."""
REPORT_EVERY = 1.0
"""Seconds between two ``sent`` lines while streaming."""
SNDBUF = 4 * 2**20
MAX_HANDSHAKE = 64 * 1024

# Opcodes (RFC 6455 section 5.2).
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


# ---------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True, slots=True)
class ShiftedFrame:
    """One capture frame, decoded, with the integer fields each pass shifts."""

    stream: str
    data: dict[str, Any]
    shifts: tuple[tuple[str, int, int], ...]
    """(field, value in the capture, added per pass)."""


def shifted_templates(recording: Recording) -> list[ShiftedFrame]:
    """The capture's frames that carry shiftable ids, with each field's per-pass offset,
    plus one restoring diff per symbol and pass (see :func:`_restoring_diff`)."""
    decoded: list[tuple[str, dict[str, Any]]] = []
    for frame in recording.received:
        msg = msgspec.json.decode(frame.text)
        if isinstance(msg, dict) and isinstance(msg.get("stream"), str):
            kind = msg["stream"].partition("@")[2]
            if kind.startswith("depth") or kind in ("bookTicker", "aggTrade", "trade"):
                decoded.append((msg["stream"], msg["data"]))
            # kline and anything else: no id to shift, so it cannot be looped
    books = snapshots(recording)
    last_diff: dict[str, int] = {}
    for i, (stream, data) in enumerate(decoded):
        if stream.partition("@")[2].startswith("depth"):
            last_diff[data["s"]] = i
    for symbol, i in sorted(last_diff.items(), key=lambda item: -item[1]):
        if symbol in books:
            stream = decoded[i][0]
            diffs = [d for s, d in decoded if s == stream]
            decoded.insert(i + 1, (stream, _restoring_diff(diffs, books[symbol])))

    # Id ranges per (id space, symbol); bookTicker u shares the depth space.
    lo: dict[tuple[str, str], int] = {}
    hi: dict[tuple[str, str], int] = {}
    fields_of: list[tuple[str, tuple[str, ...]]] = []
    for stream, data in decoded:
        kind, symbol = stream.partition("@")[2], data.get("s", "")
        if kind.startswith("depth"):
            space, fields, low, high = "depth", ("U", "u"), data["U"], data["u"]
        elif kind == "bookTicker":
            space, fields, low, high = "ticker", ("u",), data["u"], data["u"]
        elif kind == "aggTrade":
            space, fields, low, high = "aggTrade", ("a", "f", "l"), data["a"], data["a"]
        else:
            space, fields, low, high = "trade", ("t",), data["t"], data["t"]
        key = (space, symbol)
        lo[key] = min(lo.get(key, low), low)
        hi[key] = max(hi.get(key, high), high)
        fields_of.append((space, fields))

    out: list[ShiftedFrame] = []
    for (stream, data), (space, fields) in zip(decoded, fields_of, strict=True):
        symbol = data.get("s", "")
        if space == "ticker" and ("depth", symbol) in lo:
            space = "depth"  # same update ids as the book: step with the book
        key = (space, symbol)
        step = hi[key] - lo[key] + 1
        shifts = tuple((f, data[f], step) for f in fields if isinstance(data.get(f), int))
        out.append(ShiftedFrame(stream, data, shifts))
    return out


def _restoring_diff(diffs: list[dict[str, Any]], snapshot: bytes) -> dict[str, Any]:
    """A depth diff that puts every level the capture's ``diffs`` touch back to its size in
    ``snapshot`` (``"0"`` when the snapshot has no such level), chained right after them.

    Without it, pass ``k + 1`` would be applied on top of the book as pass ``k`` left it:
    levels set late in the capture (an ask that came down) would still stand when the early
    diffs come again (a bid from before the price moved), and the relay would find the book
    crossed and resync; its only snapshot, from pass 0, could never resync it. With it,
    every pass starts from the snapshot's book, as pass 0 did.
    """
    book = msgspec.json.decode(snapshot)
    last = max(diffs, key=lambda d: d["u"])
    levels: dict[str, list[list[str]]] = {}
    for side, snapshot_side in (("b", "bids"), ("a", "asks")):
        # Keyed by value: "0.3513" and "0.35130000" are the same level.
        sizes = {Decimal(p): q for p, q in book[snapshot_side]}
        touched = {Decimal(p): p for d in diffs for p, _ in d[side]}
        order = sorted(touched, reverse=side == "b")  # bids descending, asks ascending
        levels[side] = [[touched[k], sizes.get(k, "0")] for k in order]
    return {
        "e": "depthUpdate",
        "E": last["E"],
        "s": last["s"],
        "U": last["u"] + 1,
        "u": last["u"] + 1,
        "b": levels["b"],
        "a": levels["a"],
    }


def ws_header(length: int) -> bytes:
    """The header of an unmasked, final text frame of ``length`` payload bytes."""
    if length < 126:
        return bytes((0x80 | OP_TEXT, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | OP_TEXT, 126, length)
    return struct.pack("!BBQ", 0x80 | OP_TEXT, 127, length)


@dataclass(slots=True)
class Stream:
    """The pre-encoded WebSocket frames of one whole playback."""

    data: bytearray
    """Every frame (header and payload), back to back."""
    ends: array[int]
    """``ends[i]``: the offset just past frame ``i`` in :attr:`data`."""
    loops: int

    @property
    def frames(self) -> int:
        return len(self.ends)

    def frames_within(self, nbytes: int) -> int:
        """How many whole frames the first ``nbytes`` bytes hold."""
        return bisect_right(self.ends, nbytes)


def build_stream(recording: Recording, max_frames: int, max_bytes: int) -> Stream:
    """Whole passes over the capture, ids shifted per pass, up to ``max_frames`` frames or
    ``max_bytes`` bytes, whichever comes first (at least one pass)."""
    templates = shifted_templates(recording)
    if not templates:
        raise ValueError("the capture has no depth, bookTicker or trade frames to play")
    encode = msgspec.json.Encoder().encode
    data = bytearray()
    ends: array[int] = array("q")
    loops = 0
    while True:
        start_len, start_frames = len(data), len(ends)
        for t in templates:
            for field, base, step in t.shifts:
                t.data[field] = base + loops * step
            payload = encode({"stream": t.stream, "data": t.data})
            data += ws_header(len(payload))
            data += payload
            ends.append(len(data))
        loops += 1
        if len(ends) >= max_frames or len(data) >= max_bytes:
            if loops > 1 and (len(ends) > max_frames or len(data) > max_bytes):
                # Keep whole passes only, within the limits.
                del data[start_len:]
                del ends[start_frames:]
                loops -= 1
            break
    for t in templates:  # leave the capture's values as they were
        for field, base, _ in t.shifts:
            t.data[field] = base
    return Stream(data, ends, loops)


def snapshots(recording: Recording) -> dict[str, bytes]:
    """The first recorded ``/api/v3/depth`` body per symbol."""
    out: dict[str, bytes] = {}
    for response in recording.http:
        parts = urlsplit(response.url)
        symbol = parse_qs(parts.query).get("symbol", [""])[0].upper()
        if parts.path == "/api/v3/depth" and symbol and symbol not in out:
            out[symbol] = response.body.encode()
    return out


# ---------------------------------------------------------------------------------------------
# WebSocket


class _Closed(Exception):
    """The peer closed the socket."""


class _Reader:
    """Buffered exact reads from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def read_until(self, marker: bytes, limit: int) -> bytes:
        while (i := self._buf.find(marker)) < 0:
            if len(self._buf) > limit:
                raise ValueError("request too large")
            self._fill()
        out = bytes(self._buf[: i + len(marker)])
        del self._buf[: i + len(marker)]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise _Closed
        self._buf += chunk


def _read_frame(reader: _Reader) -> tuple[int, bytes]:
    """One client frame: (opcode, unmasked payload). Fragments come back as they are."""
    b0, b1 = reader.read_exact(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", reader.read_exact(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", reader.read_exact(8))
    mask = reader.read_exact(4) if b1 & 0x80 else b""
    payload = reader.read_exact(length)
    if mask:
        # XOR with the 4-byte key repeated: one big-integer operation, not a byte loop.
        key = (mask * (length // 4 + 1))[:length]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
            length, "big"
        )
    return b0 & 0x0F, payload


def _control(opcode: int, payload: bytes) -> bytes:
    """An unmasked server control frame (payloads of control frames are < 126 bytes)."""
    return bytes((0x80 | opcode, len(payload))) + payload


def _handshake(reader: _Reader, sock: socket.socket) -> bool:
    """Answer the HTTP upgrade request; False (after a 400) when it is not one."""
    request = reader.read_until(b"\r\n\r\n", MAX_HANDSHAKE).decode("latin-1")
    headers: dict[str, str] = {}
    for line in request.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    key = headers.get("sec-websocket-key")
    if key is None or "websocket" not in headers.get("upgrade", "").lower():
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return False
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    sock.sendall(
        (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    return True


def _say(line: str) -> None:
    # One print per line under a lock: connection threads must not interleave lines.
    with _say_lock:
        print(line, flush=True)


_say_lock = threading.Lock()


class _Connection:
    """One client: handshake, wait for its first frame, stream, then idle."""

    def __init__(
        self,
        sock: socket.socket,
        number: int,
        stream: Stream,
        rate: float,
        duration: float,
        tick: float,
    ) -> None:
        self.sock = sock
        self.number = number
        self.stream = stream
        self.rate = rate
        self.duration = duration
        self.tick = tick
        self.send_lock = threading.Lock()
        """Held for every write: the pong of the reader thread must not land mid-frame."""
        self.closed = threading.Event()

    def run(self) -> None:
        sock = self.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            reader = _Reader(sock)
            if not _handshake(reader, sock):
                return
            _read_frame(reader)  # the subscribe request; its content does not matter
            threading.Thread(target=self._read_forever, args=(reader,), daemon=True).start()
            _say(f"streaming conn={self.number}")
            self._stream()
            self.closed.wait()  # idle until the client leaves
        except (_Closed, OSError, ValueError):
            pass
        finally:
            self.closed.set()
            with contextlib.suppress(OSError):
                sock.close()

    def _read_forever(self, reader: _Reader) -> None:
        """Consume client frames; answer pings; on a close frame, answer it and stop."""
        try:
            while True:
                opcode, payload = _read_frame(reader)
                if opcode == OP_PING:
                    with self.send_lock:
                        self.sock.sendall(_control(OP_PONG, payload[:125]))
                elif opcode == OP_CLOSE:
                    with self.send_lock:
                        self.sock.sendall(_control(OP_CLOSE, payload[:2]))
                    break
        except (_Closed, OSError):
            pass
        self.closed.set()

    def _stream(self) -> None:
        stream, view = self.stream, memoryview(self.stream.data)
        total = len(view)
        sent = 0
        start = time.perf_counter()
        stop_at = start + self.duration if self.duration > 0 else float("inf")
        next_report = start + REPORT_EVERY
        reason = "end"
        # Paced: frame i is due at start + i / rate; every tick, send all frames due by now.
        paced = self.rate > 0
        done_frames = 0
        while sent < total:
            now = time.perf_counter()
            if self.closed.is_set():
                reason = "closed"
                break
            if now >= stop_at:
                reason = "duration"
                break
            if now >= next_report:
                _say(self._line("sent", stream.frames_within(sent), sent, now - start))
                next_report += REPORT_EVERY
            if paced:
                due = min(stream.frames, int((now - start) * self.rate) + 1)
                if due > done_frames:
                    end = stream.ends[due - 1]
                    with self.send_lock:
                        self.sock.sendall(view[sent:end])
                    sent, done_frames = end, due
                time.sleep(self.tick)
            else:
                end = min(total, sent + CHUNK)
                with self.send_lock:
                    self.sock.sendall(view[sent:end])
                sent = end
        elapsed = time.perf_counter() - start
        line = self._line("done", stream.frames_within(sent), sent, elapsed)
        _say(f"{line} reason={reason}")

    def _line(self, what: str, frames: int, nbytes: int, seconds: float) -> str:
        return f"{what} conn={self.number} frames={frames} bytes={nbytes} seconds={seconds:.3f}"


def serve_ws(
    listener: socket.socket, stream: Stream, rate: float, duration: float, tick: float
) -> None:
    """Accept connections forever, one thread each."""
    number = 0
    while True:
        sock, _ = listener.accept()
        number += 1
        conn = _Connection(sock, number, stream, rate, duration, tick)
        threading.Thread(target=conn.run, name=f"ws-{number}", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# REST


def make_rest_handler(bodies: dict[str, bytes]) -> type[BaseHTTPRequestHandler]:
    """A request handler answering ``/api/v3/depth?symbol=X`` from ``bodies``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the relay's client reuses connections

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            symbol = parse_qs(parts.query).get("symbol", [""])[0].upper()
            body = bodies.get(symbol) if parts.path == "/api/v3/depth" else None
            status = 200
            if body is None:
                status = 404
                body = b'{"code":-1121,"msg":"Invalid symbol."}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # stdout is the bench's control channel; stay quiet

    return Handler


# ---------------------------------------------------------------------------------------------
# Command line


def _exit_when_orphaned(parent: int) -> None:
    """Exit once the process that started us is gone, so a killed bench leaves no feed."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    # Nothing to flush or close: the streams and sockets die with the process.
    os._exit(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/feed.py",
        description="A fast loopback Binance venue: looped capture with shifted ids.",
    )
    parser.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE, help="cryptofeed capture")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="frames/s; 0 = as fast as possible (default)"
    )
    parser.add_argument(
        "--tick",
        type=float,
        default=TICK,
        help=f"paced: seconds between two writes (default: {TICK:g})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop streaming after this many seconds per connection; 0 = until the frames "
        "run out (default)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=0,
        help="frames to build; 0 = rate x duration (+10%%) when both are set, else as many "
        "as --max-mb allows",
    )
    parser.add_argument(
        "--max-mb", type=float, default=256.0, help="cap on the frame buffer (default: 256)"
    )
    parser.add_argument("--ws-port", type=int, default=0, help="0 = a free port (default)")
    parser.add_argument("--http-port", type=int, default=0, help="0 = a free port (default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.rate, args.duration, args.frames) < 0 or args.max_mb <= 0 or args.tick <= 0:
        print(
            "feed: --rate, --duration and --frames must be >= 0, --max-mb and --tick > 0",
            file=sys.stderr,
        )
        return 2
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)

    recording = load(args.capture)
    frames = args.frames
    if not frames:
        frames = int(args.rate * args.duration * 1.1) + 1 if args.rate and args.duration else 0
    began = time.perf_counter()
    stream = build_stream(recording, frames or sys.maxsize, int(args.max_mb * 2**20))
    print(
        f"feed: built {stream.frames} frames ({stream.loops} passes, "
        f"{len(stream.data) / 2**20:.0f} MiB) in {time.perf_counter() - began:.1f} s",
        file=sys.stderr,
        flush=True,
    )

    listener = socket.create_server(("127.0.0.1", args.ws_port), backlog=16)
    rest = ThreadingHTTPServer(
        ("127.0.0.1", args.http_port), make_rest_handler(snapshots(recording))
    )
    rest.daemon_threads = True
    threading.Thread(target=rest.serve_forever, daemon=True).start()
    threading.Thread(
        target=serve_ws,
        args=(listener, stream, args.rate, args.duration, args.tick),
        daemon=True,
    ).start()
    _say(f"ws_url=ws://127.0.0.1:{listener.getsockname()[1]}/stream")
    _say(f"rest_url=http://127.0.0.1:{rest.server_address[1]}")
    threading.Event().wait()  # until a signal or orphaning ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
