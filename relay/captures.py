"""Recorded venue traffic: read cryptofeed captures and our own recording format.

Tests, the replay venue, the demo and the benchmarks all read recordings through
:func:`load`, which returns a :class:`Recording`: the WebSocket frames the venue sent (in
arrival order, with their receive time), the frames the client sent, and the REST responses
taken during the same session.

Our own format (``*.jsonl``) is one JSON object per line::

    {"recording": 1, "venue": "binance", "url": "wss://..."}       # header, first line
    {"ts": 1633998512063356900, "ws": "<frame text as received>"}
    {"ts": 1633998511159679000, "sent": "<frame text the client sent>"}
    {"ts": 1633998512320639000, "http": "<request url>", "body": "<response text>"}

cryptofeed's raw-data format (``BINANCE.ws.1.0`` + ``BINANCE.http.0.0``) is line oriented:
``<url> <-> <ts>`` opens a connection, ``<url> <- <ts>: <json>`` is a client frame,
``<ts>: <json>`` a received frame, and in ``*.http.*`` files ``<url> -> <ts>: <json>`` a
REST response; times are float seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec


@dataclass(frozen=True, slots=True)
class Frame:
    ts: int
    """Receive (or send) time in ns since the epoch."""
    text: str


@dataclass(frozen=True, slots=True)
class HttpResponse:
    ts: int
    url: str
    body: str


@dataclass(slots=True)
class Recording:
    venue: str = ""
    url: str = ""
    received: list[Frame] = field(default_factory=list)
    sent: list[Frame] = field(default_factory=list)
    http: list[HttpResponse] = field(default_factory=list)


class RecordingError(ValueError):
    pass


def _seconds_to_ns(text: str) -> int:
    return int(Decimal(text) * 1_000_000_000)


_CF_OPEN = re.compile(r"^(\S+) <-> (\d+(?:\.\d+)?)$")
_CF_SENT = re.compile(r"^(\S+) <- (\d+(?:\.\d+)?): (.*)$")
_CF_RECV = re.compile(r"^(\d+(?:\.\d+)?): (.*)$")
_CF_HTTP = re.compile(r"^(\S+) -> (\d+(?:\.\d+)?): (.*)$")


def load_cryptofeed(ws_path: Path, http_path: Path | None = None) -> Recording:
    """Read a cryptofeed ``*.ws.*`` capture and, optionally, its ``*.http.*`` partner."""
    rec = Recording(venue=ws_path.name.split(".")[0].lower())
    for lineno, line in enumerate(ws_path.read_text().splitlines(), 1):
        if not line:
            continue
        if m := _CF_RECV.match(line):
            rec.received.append(Frame(_seconds_to_ns(m.group(1)), m.group(2)))
        elif m := _CF_SENT.match(line):
            rec.sent.append(Frame(_seconds_to_ns(m.group(2)), m.group(3)))
        elif m := _CF_OPEN.match(line):
            rec.url = rec.url or m.group(1)
        else:
            raise RecordingError(f"{ws_path}:{lineno}: not a cryptofeed capture line")
    if http_path is not None:
        for lineno, line in enumerate(http_path.read_text().splitlines(), 1):
            if not line:
                continue
            m = _CF_HTTP.match(line)
            if not m:
                raise RecordingError(f"{http_path}:{lineno}: not a cryptofeed http line")
            rec.http.append(HttpResponse(_seconds_to_ns(m.group(2)), m.group(1), m.group(3)))
    return rec


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    ts: int = 0
    ws: str | None = None
    sent: str | None = None
    http: str | None = None
    body: str | None = None
    recording: int | None = None
    venue: str | None = None
    url: str | None = None


def load_jsonl(path: Path) -> Recording:
    """Read a recording in our own JSON-lines format."""
    rec = Recording()
    decoder = msgspec.json.Decoder(_Line)
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise RecordingError(f"{path}:{lineno}: {exc}") from None
        if line.recording is not None:
            rec.venue = line.venue or ""
            rec.url = line.url or ""
        elif line.ws is not None:
            rec.received.append(Frame(line.ts, line.ws))
        elif line.sent is not None:
            rec.sent.append(Frame(line.ts, line.sent))
        elif line.http is not None and line.body is not None:
            rec.http.append(HttpResponse(line.ts, line.http, line.body))
        else:
            raise RecordingError(f"{path}:{lineno}: a line needs 'ws', 'sent' or 'http'+'body'")
    return rec


def dump_jsonl(rec: Recording, path: Path) -> None:
    """Write ``rec`` in our own format (frames and responses merged in time order)."""
    enc = msgspec.json.Encoder()
    lines = [enc.encode({"recording": 1, "venue": rec.venue, "url": rec.url})]
    items: list[tuple[int, bytes]] = []
    items += [(f.ts, enc.encode({"ts": f.ts, "ws": f.text})) for f in rec.received]
    items += [(f.ts, enc.encode({"ts": f.ts, "sent": f.text})) for f in rec.sent]
    items += [(h.ts, enc.encode({"ts": h.ts, "http": h.url, "body": h.body})) for h in rec.http]
    lines += [line for _, line in sorted(items, key=lambda item: item[0])]
    path.write_bytes(b"\n".join(lines) + b"\n")


def load(path: Path) -> Recording:
    """Load ``*.jsonl`` (ours) or a cryptofeed ``NAME.ws.N.M`` (with ``NAME.http.0.0`` beside it
    when present)."""
    if path.suffix == ".jsonl":
        return load_jsonl(path)
    parts = path.name.split(".")
    if len(parts) >= 3 and parts[1] == "ws":
        http = path.with_name(f"{parts[0]}.http.0.0")
        return load_cryptofeed(path, http if http.exists() else None)
    raise RecordingError(f"{path}: not a recording (*.jsonl or a cryptofeed NAME.ws.N.M file)")
