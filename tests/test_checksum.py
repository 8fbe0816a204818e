"""Tests of relay/checksum.py: the OKX / Bitget CRC32 book checksum.

The doc examples fix the string layout and the signed reading; the real captures (OKX v5
2022, Bitget v1 2022 spot and futures; see tests/data/okx and tests/data/bitget) fix the
whole procedure: a book rebuilt here from the raw frames, independently of the codecs,
must reproduce the venue's checksum after every message.
"""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from pathlib import Path

import pytest

from relay.book import OrderBook, TextLevel, parse_text_levels
from relay.captures import load
from relay.checksum import (
    CHECKSUM_DEPTH,
    book_checksum,
    checksum_text,
    crc32_signed,
    ms_text_to_ns,
    text_book_checksum,
)

DATA = Path(__file__).parent / "data"


def test_doc_examples() -> None:
    # okx.md: bid 3366.1x7 / 3366x6, ask 3366.8x9 / 3368x8
    text = checksum_text([("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")])
    assert text == "3366.1:7:3366.8:9:3366:6:3368:8"
    assert zlib.crc32(text.encode()) == 2413953002
    assert crc32_signed(text) == -1881014294
    # bitget.md: one bid, three asks (the missing bids are skipped, not written empty)
    text = checksum_text([("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")])
    assert text == "3366.1:7:3366.8:9:3368:8:3372:8"
    assert crc32_signed(text) == 831078360
    assert crc32_signed("43231.1:4:43232.8:9:43231:6:43232.9:8") == -1504501796


def test_signed_reading_and_depth() -> None:
    assert crc32_signed("") == 0
    assert all(-(2**31) <= crc32_signed(str(i)) < 2**31 for i in range(1000))
    bids = [(str(100 - i), "1") for i in range(30)]
    asks = [(str(101 + i), "2") for i in range(3)]
    parts = checksum_text(bids, asks).split(":")
    assert len(parts) == 2 * (CHECKSUM_DEPTH + 3)
    assert parts[:8] == ["100", "1", "101", "2", "99", "1", "102", "2"]
    assert parts[-2:] == ["76", "1"]  # the 25th bid; bids 26-30 are not covered
    assert checksum_text([], []) == ""


def test_book_checksum_keeps_the_wire_text() -> None:
    book = OrderBook()
    book.apply_snapshot(
        [(Decimal("0.00003530"), Decimal("145214")), (Decimal("5.0"), Decimal("0"))],
        [(Decimal("0.00003545"), Decimal("20609328.10"))],
    )
    # Trailing zeros survive; the zero-size level is not in the book.
    assert book_checksum(book) == crc32_signed("0.00003530:145214:0.00003545:20609328.10")


def test_text_book_checksum_joins_the_texts_as_sent() -> None:
    book: OrderBook[TextLevel] = OrderBook()
    bids = [["0.00003530", "145214", "0", "2"], ["0.0000352", "1E-8"], ["5.0", "0"]]
    asks = [["0.00003545", "20609328.10"]]
    book.apply_snapshot(parse_text_levels(bids)[1], parse_text_levels(asks)[1])
    # As sent, exponent included; the longer side's rest follows; zero sizes are no levels.
    expected = "0.00003530:145214:0.00003545:20609328.10:0.0000352:1E-8"
    assert text_book_checksum(book) == crc32_signed(expected)
    book.apply_delta([], parse_text_levels([["0.00003546", "1"], ["0.00003547", "2"]])[1])
    expected = "0.00003530:145214:0.00003545:20609328.10:0.0000352:1E-8:0.00003546:1:0.00003547:2"
    assert text_book_checksum(book) == crc32_signed(expected)


def _levels(raw: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(level[0]), Decimal(level[1])) for level in raw]


def _validate(files: list[Path], inst_key: str = "instId") -> tuple[int, int]:
    """Rebuild every book of the recordings from raw frames, as Decimals and as the texts
    (:func:`text_book_checksum`, the codecs'); (messages checked, matches of both)."""
    books: dict[str, OrderBook] = {}
    text_books: dict[str, OrderBook[TextLevel]] = {}
    checked = matched = 0
    for path in files:
        for frame in load(path).received:
            message = json.loads(frame.text)
            if message.get("arg", {}).get("channel") != "books" or "data" not in message:
                continue
            for data in message["data"]:
                book = books.setdefault(message["arg"][inst_key], OrderBook())
                text_book = text_books.setdefault(message["arg"][inst_key], OrderBook())
                _, text_bids = parse_text_levels(data["bids"])
                _, text_asks = parse_text_levels(data["asks"])
                if message["action"] == "snapshot":
                    book.apply_snapshot(_levels(data["bids"]), _levels(data["asks"]))
                    text_book.apply_snapshot(text_bids, text_asks)
                else:
                    book.apply_delta(_levels(data["bids"]), _levels(data["asks"]))
                    text_book.apply_delta(text_bids, text_asks)
                checked += 1
                matched += book_checksum(book) == data["checksum"] == text_book_checksum(text_book)
    return checked, matched


def test_okx_capture_checksums() -> None:
    files = sorted((DATA / "okx").glob("OKX.ws.1.0.part*.jsonl"))
    assert _validate(files) == (290, 290)


@pytest.mark.parametrize(("name", "count"), [("BITGET.ws.1.0", 443), ("BITGET.ws.2.0", 194)])
def test_bitget_v1_capture_checksums(name: str, count: int) -> None:
    files = sorted((DATA / "bitget").glob(f"{name}.part*.jsonl"))
    assert _validate(files) == (count, count)


def test_ms_text_to_ns() -> None:
    assert ms_text_to_ns("1597026383085") == 1597026383085 * 1_000_000
    assert ms_text_to_ns("9223372036854") == 9223372036854 * 1_000_000
    # The next millisecond's nanoseconds would not fit an int64.
    for bad in ("", " 1", "+1", "-1", "1_0", "1.5", "١", "1e3", "9223372036855", "9" * 5000):
        with pytest.raises(ValueError):
            ms_text_to_ns(bad)
