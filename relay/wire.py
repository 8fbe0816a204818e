"""The wire contract with consumers: subjects, message ids and JSON bodies.

Subjects are ``market.<venue>.<symbol token>.<type>``, and ``market.<venue>._status`` for
:class:`~relay.events.VenueStatus`. The symbol token is the canonical symbol with ``A-Z``
lowered and every other byte outside ``[0-9A-Z-]`` written as ``_`` plus two lowercase hex
digits of its UTF-8 encoding (``/`` → ``_2f``, ``_`` → ``_5f``, ``k`` → ``_6b``), so it is
always ``[a-z0-9_-]`` and :func:`symbol_from_token` recovers the symbol exactly.

Every message carries a ``Nats-Msg-Id`` made from venue identifiers (trade ids, update ids,
venue timestamps), so the same venue event published twice, by a retry, a reconnect overlap
or a second relay, is stored once by JetStream. An event the venue gives neither an id nor a
time (Hyperliquid's asset contexts) falls back to the relay's receive time: retries still
dedupe, but a second relay stores its own copy of it.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

import msgspec

from relay.events import (
    DATA_TYPE_OF,
    BookDelta,
    BookSnapshot,
    DataType,
    FundingRate,
    Liquidation,
    MarketEvent,
    MarkPrice,
    OpenInterest,
    Ticker,
    Trade,
    VenueStatus,
)

_PLAIN = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_ESCAPED = re.compile(r"_([0-9a-f]{2})")


def symbol_token(symbol: str) -> str:
    """The subject token for a canonical symbol (see the module docstring)."""
    if all(c in _PLAIN for c in symbol):
        return symbol.lower()
    out = []
    for c in symbol:
        if c in _PLAIN:
            out.append(c.lower())
        else:
            out.extend(f"_{b:02x}" for b in c.encode())
    return "".join(out)


def symbol_from_token(token: str) -> str:
    """Invert :func:`symbol_token`."""
    raw = bytearray()
    i = 0
    while i < len(token):
        m = _ESCAPED.match(token, i)
        if m:
            raw.append(int(m.group(1), 16))
            i = m.end()
        else:
            raw.extend(token[i].upper().encode())
            i += 1
    return raw.decode()


def subject(event: MarketEvent) -> str:
    return _subject(event.venue, event.symbol, DATA_TYPE_OF[type(event)])


@functools.lru_cache(maxsize=65536)
def _subject(venue: str, symbol: str, data_type: DataType | None) -> str:
    # Every message needs one and the configured symbols are few: build each subject once.
    if data_type is None:
        return f"market.{venue}._status"
    return f"market.{venue}.{symbol_token(symbol)}.{data_type}"


def msg_id(event: MarketEvent) -> str:
    """The deterministic ``Nats-Msg-Id`` of an event."""
    head = f"{event.venue}:{event.symbol}"
    match event:
        case Trade():
            return f"{head}:trade:{event.trade_id}"
        case BookDelta():
            return f"{head}:l2d:{event.sequence}"
        case BookSnapshot():
            return f"{head}:l2s:{event.sequence}"
        case Ticker():
            key = event.sequence if event.sequence is not None else _when(event)
            return f"{head}:ticker:{key}"
        case FundingRate():
            return f"{head}:funding:{_when(event)}:{event.rate}"
        case Liquidation():
            key = event.liquidation_id or f"{_when(event)}:{event.side}:{event.price}"
            return f"{head}:liq:{key}:{event.size}"
        case MarkPrice():
            return f"{head}:mark:{_when(event)}"
        case OpenInterest():
            return f"{head}:oi:{_when(event)}:{event.open_interest}"
        case VenueStatus():
            return f"{head}:status:{event.kind}:{event.ts_recv}"
    raise TypeError(f"not a market event: {event!r}")


def _when(event: MarketEvent) -> str:
    """The venue's time of an event; the relay's receive time (``r...``) when the venue gives
    none. Content cannot stand in for it: a value that comes back (A, B, A) is a new event."""
    return str(event.ts_venue) if event.ts_venue is not None else f"r{event.ts_recv}"


_encoder = msgspec.json.Encoder(decimal_format="string")


def encode(event: MarketEvent) -> bytes:
    """The JSON body: the event's fields, decimals as the venue's strings."""
    return _encoder.encode(event)


class OutMessage(NamedTuple):
    """One message on its way to JetStream."""

    subject: str
    msg_id: str
    payload: bytes
    recv_ns: int
    """When the frame it came from was read; for frame → PubAck latency."""


def to_message(event: MarketEvent) -> OutMessage:
    return OutMessage(subject(event), msg_id(event), encode(event), event.ts_recv)
