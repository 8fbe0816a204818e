"""Order-book checksums: the CRC32 of the interleaved top 25 levels (OKX v5, Bitget v2).

OKX and Bitget use the same scheme (okx.md and bitget.md, "Checksum"): take the best 25
bids and the best 25 asks of the book *after* applying a message, and join, level by level,
``bid1px:bid1sz:ask1px:ask1sz:bid2px:bid2sz:ask2px:ask2sz:…`` with ``:``; when one side has
fewer levels its missing entries are skipped (not written empty). The strings are the ones
the venue sent. The CRC32 (zlib / IEEE 802.3) of that ASCII text, read as a **signed** 32-bit
integer, is the ``checksum`` field of the message.

A book of :data:`~relay.book.TextLevel` levels keeps the venue's text of every level, which
:func:`text_book_checksum` joins as it is (the codecs' books). A book of plain levels gives
a level back as :class:`~decimal.Decimal` numbers, which :func:`book_checksum` writes out again:
``format(d, "f")`` writes a Decimal built from plain notation
(``"0.00003530"``, ``"100"``, ``"5.0"``) back exactly as it was written, digits, trailing
zeros and all, which is what the checksum needs. (It would not restore exponent notation
such as ``"1E-8"``, which neither venue sends.)

:func:`~relay.timestamps.ms_text_to_ns`, the strict reading of the millisecond timestamps
both venues send as decimal strings, lives in :mod:`relay.timestamps`; it is re-exported
here for the callers that import it from this module.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Final

from relay.book import Level, OrderBook, TextLevel
from relay.timestamps import ms_text_to_ns

__all__ = [
    "CHECKSUM_DEPTH",
    "book_checksum",
    "checksum_text",
    "crc32_signed",
    "ms_text_to_ns",
    "text_book_checksum",
]

CHECKSUM_DEPTH: Final = 25
"""Levels per side the OKX / Bitget checksum covers."""


def crc32_signed(text: str) -> int:
    """CRC32 of ``text`` (ASCII/UTF-8) as a signed 32-bit integer, as OKX and Bitget send it."""
    crc = zlib.crc32(text.encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc


def checksum_text(
    bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]], depth: int = CHECKSUM_DEPTH
) -> str:
    """The interleaved ``bidpx:bidsz:askpx:asksz:…`` string of the best ``depth`` levels.

    ``bids`` and ``asks`` are text levels, best first; only the first ``depth`` of each
    are used, and a side that runs out first simply contributes nothing further.
    """
    parts: list[str] = []
    n_bids = min(len(bids), depth)
    n_asks = min(len(asks), depth)
    for i in range(max(n_bids, n_asks)):
        if i < n_bids:
            parts += bids[i]
        if i < n_asks:
            parts += asks[i]
    return ":".join(parts)


def _texts(levels: Iterable[tuple[Decimal, Decimal]]) -> list[tuple[str, str]]:
    return [(format(price, "f"), format(size, "f")) for price, size in levels]


def book_checksum(book: OrderBook[Level], depth: int = CHECKSUM_DEPTH) -> int:
    """The signed CRC32 checksum of ``book``'s best ``depth`` levels per side."""
    bids, asks = book.top(depth)
    return crc32_signed(checksum_text(_texts(bids), _texts(asks), depth))


def text_book_checksum(book: OrderBook[TextLevel], depth: int = CHECKSUM_DEPTH) -> int:
    """:func:`book_checksum` of a book that keeps the venue's texts: no number is written
    out, which is most of what the checksum costs otherwise."""
    # The codecs check every book message with this, so it is written for speed: the sides'
    # top() rather than the book's (one call less), the texts unpacked in the comprehension
    # rather than subscripted, crc32_signed inlined.
    bids = book.bids.top(depth)
    asks = book.asks.top(depth)
    # One f-string per pair of levels: fewer, larger parts than checksum_text's.
    parts = [
        f"{bp}:{bs}:{ap}:{as_}" for (_, _, bp, bs), (_, _, ap, as_) in zip(bids, asks, strict=False)
    ]
    both = len(parts)
    if len(bids) != len(asks):
        parts += [f"{price}:{size}" for _, _, price, size in bids[both:] or asks[both:]]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc
