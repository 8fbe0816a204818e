"""Keep live L2 order books from the relay's ``MARKET_BOOKS`` stream, and check their chains.

A consumer to copy and adapt. It reads ``l2_snapshot`` and ``l2_delta`` messages through an
ephemeral *ordered* JetStream consumer (no acks, no state on the server, messages in stream
order, recreated by nats-py on any gap) and keeps one book per venue and symbol, following the
README's contract:

* an ``l2_snapshot`` replaces the book;
* an ``l2_delta`` is applied only when its ``prev_sequence`` equals the ``sequence`` of the
  last message applied to that book; any other delta is a *chain break*: the book is marked
  stale and every delta is skipped until the next snapshot, which the relay publishes after
  each resync.

Prices and sizes stay :class:`~decimal.Decimal`, built from the exact strings the venue sent.
The book logic (:class:`Books`, :class:`Book`) has no I/O, so it can be tested on its own and
reused, e.g. by ``examples/demo.py`` to verify what the demo stored.

Run (with the relay publishing, or with messages already in the stream)::

    python examples/consumer.py --url nats://127.0.0.1:4222 \\
        --subject market.binance.btc-usdt.l2_orderbook

It reads the stream from its first message: the relay publishes a snapshot only when a book
(re)synchronizes, so a consumer starting at "new" messages could wait a long time for one.
Ctrl-C (or ``--max-messages`` / ``--idle-exit``) stops it with a per-book summary; the exit
status is 1 when any chain broke, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

CONNECT_TIMEOUT = 10.0
"""Seconds to keep trying the first connection."""
Level = tuple[Decimal, Decimal]
"""A price level: (price, size)."""
BookKey = tuple[str, str]
"""(venue, canonical symbol): symbols are unique per venue only."""
Outcome = Literal["snapshot", "applied", "break", "skipped", "ignored"]
"""What one message did: replaced a book, extended it, broke its chain, was skipped because
the book waits for a snapshot, or was not a book message at all."""


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """A delta whose ``prev_sequence`` did not continue the book it was meant for."""

    venue: str
    symbol: str
    expected_prev: int
    """The ``sequence`` of the last message applied to the book."""
    prev_sequence: int
    """What the delta said came before it."""
    sequence: int
    """The delta's own (final) sequence."""

    def __str__(self) -> str:
        return (
            f"{self.venue} {self.symbol}: delta {self.sequence} follows {self.prev_sequence}, "
            f"but the last applied message was {self.expected_prev}"
        )


@dataclass(slots=True)
class Book:
    """One symbol's L2 book: sizes by price, and where its chain stands.

    ``sequence`` is that of the last snapshot or delta applied; ``None`` until the first
    snapshot. ``stale`` is true until a snapshot arrives and again after a chain break.
    """

    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    sequence: int | None = None
    stale: bool = True
    snapshots: int = 0
    deltas_applied: int = 0
    deltas_skipped: int = 0
    breaks: int = 0

    def best_bid(self) -> Level | None:
        """The highest bid, or ``None`` for an empty side."""
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> Level | None:
        """The lowest ask, or ``None`` for an empty side."""
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def replace(self, bids: list[list[str]], asks: list[list[str]], sequence: int) -> None:
        """Become the snapshot: these levels, at this sequence, no longer stale."""
        self.bids = _levels(bids)
        self.asks = _levels(asks)
        self.sequence = sequence
        self.stale = False
        self.snapshots += 1

    def update(self, bids: list[list[str]], asks: list[list[str]], sequence: int) -> None:
        """Apply a delta's absolute sizes; a zero size removes the level."""
        for side, changes in ((self.bids, bids), (self.asks, asks)):
            for price_text, size_text in changes:
                price, size = Decimal(price_text), Decimal(size_text)
                if size:
                    side[price] = size
                else:
                    side.pop(price, None)
        self.sequence = sequence
        self.deltas_applied += 1


def _levels(levels: list[list[str]]) -> dict[Decimal, Decimal]:
    # Decimal("0.3513") and Decimal("0.35130000") are equal and hash alike, so a delta that
    # spells a price differently from the snapshot still finds its level.
    return {Decimal(price): Decimal(size) for price, size in levels if Decimal(size)}


class Books:
    """Every book seen on the stream, fed one decoded message body at a time."""

    def __init__(self) -> None:
        self.books: dict[BookKey, Book] = {}
        self.breaks: list[ChainBreak] = []
        """Every chain break, in the order they were found."""

    def on_message(self, body: Mapping[str, Any]) -> tuple[BookKey | None, Outcome]:
        """Apply one ``l2_orderbook`` message body and say what it did to which book.

        Other message types are ``"ignored"`` (with key ``None``), so the subscription may be
        wider than the book subjects.
        """
        kind = body.get("type")
        if kind not in ("l2_snapshot", "l2_delta"):
            return None, "ignored"
        key: BookKey = (body["venue"], body["symbol"])
        book = self.books.setdefault(key, Book())
        if kind == "l2_snapshot":
            book.replace(body["bids"], body["asks"], body["sequence"])
            return key, "snapshot"
        if book.stale or book.sequence is None:
            # No snapshot yet, or the chain broke: nothing can be applied until one comes.
            book.deltas_skipped += 1
            return key, "skipped"
        if body["prev_sequence"] != book.sequence:
            self.breaks.append(
                ChainBreak(key[0], key[1], book.sequence, body["prev_sequence"], body["sequence"])
            )
            book.stale = True
            book.breaks += 1
            book.deltas_skipped += 1
            return key, "break"
        book.update(body["bids"], body["asks"], body["sequence"])
        return key, "applied"


def top_line(key: BookKey, book: Book) -> str:
    """``binance BTC-USDT  #123  bid 1.00 x 2 | ask 1.01 x 3  spread 0.01`` for printing."""
    bid, ask = book.best_bid(), book.best_ask()
    bid_text = f"{bid[0]} x {bid[1]}" if bid else "-"
    ask_text = f"{ask[0]} x {ask[1]}" if ask else "-"
    spread = f"  spread {ask[0] - bid[0]:f}" if bid and ask else ""
    return f"{key[0]} {key[1]}  #{book.sequence}  bid {bid_text} | ask {ask_text}{spread}"


def summary(books: Books) -> str:
    """One line per book (state and counts), then every chain break."""
    lines = []
    for (venue, symbol), book in sorted(books.books.items()):
        state = (
            "waiting for a snapshot" if book.sequence is None else "stale" if book.stale else "live"
        )
        lines.append(
            f"{venue} {symbol}: {state}, {book.snapshots} snapshot(s), "
            f"{book.deltas_applied} delta(s) applied, {book.deltas_skipped} skipped, "
            f"{book.breaks} chain break(s)"
        )
    lines.extend(f"chain break: {brk}" for brk in books.breaks)
    return "\n".join(lines) or "no book messages"


async def consume(
    books: Books,
    url: str,
    stream: str,
    subject: str,
    every: int = 1,
    max_messages: int | None = None,
    idle_exit: float | None = None,
) -> None:
    """Follow ``subject`` on ``stream`` from its first message into ``books``, printing them.

    Returns after ``max_messages`` messages, after ``idle_exit`` seconds without one, or
    never (until cancelled) when both are ``None``. ``books`` holds whatever was read even
    when this is cancelled.
    """
    # Imported here so that the book logic above, which tests and the demo import, needs no
    # NATS client.
    import nats
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.api import DeliverPolicy

    async def report(exc: Exception) -> None:
        # nats-py's default logs a full traceback for every failed (re)connect attempt.
        print(f"nats: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    # Once connected, reconnect for ever (a server restart must not end a live consumer), but
    # give up on a server that is not there to begin with.
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                url, name="relay-example-consumer", max_reconnect_attempts=-1, error_cb=report
            ),
            CONNECT_TIMEOUT,
        )
    except TimeoutError:
        raise ConnectionError(
            f"no NATS server answered at {url} within {CONNECT_TIMEOUT:g} s"
        ) from None
    try:
        js = nc.jetstream()
        # Ordered consumer: ephemeral, flow-controlled, no acks; nats-py recreates it from
        # the next stream sequence if a message goes missing, so delivery stays gap-free.
        sub = await js.subscribe(
            subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        print(f"following {subject} on {stream} at {url}", flush=True)
        seen = 0
        while max_messages is None or seen < max_messages:
            try:
                msg = await sub.next_msg(timeout=idle_exit)  # None waits for ever
            except NatsTimeoutError:
                print(f"no message for {idle_exit:g} s, stopping", flush=True)
                break
            seen += 1
            key, outcome = books.on_message(json.loads(msg.data))
            if key is None:
                continue
            book = books.books[key]
            if outcome == "break":
                print(f"CHAIN BREAK {books.breaks[-1]}; waiting for the next snapshot", flush=True)
            elif outcome == "snapshot":
                print(f"snapshot  {top_line(key, book)}", flush=True)
            elif outcome == "applied" and book.deltas_applied % every == 0:
                print(f"delta     {top_line(key, book)}", flush=True)
    finally:
        await nc.close()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Keep L2 books from the relay's MARKET_BOOKS stream and verify their chains."
    )
    parser.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS server URL")
    parser.add_argument(
        "--subject",
        default="market.*.*.l2_orderbook",
        help="subject filter, e.g. market.binance.btc-usdt.l2_orderbook (default: all books)",
    )
    parser.add_argument("--stream", default="MARKET_BOOKS", help="stream (default: %(default)s)")
    parser.add_argument(
        "--every", type=_positive_int, default=1, help="print every Nth applied delta per book"
    )
    parser.add_argument("--max-messages", type=_positive_int, help="stop after this many messages")
    parser.add_argument(
        "--idle-exit", type=_positive_float, metavar="SECONDS", help="stop after SECONDS idle"
    )
    args = parser.parse_args(argv)
    books = Books()
    try:
        asyncio.run(
            consume(
                books,
                args.url,
                args.stream,
                args.subject,
                args.every,
                args.max_messages,
                args.idle_exit,
            )
        )
    except KeyboardInterrupt:
        print("\ninterrupted")
    except Exception as exc:  # no server, no such stream, ...: say it plainly
        print(f"consumer: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(summary(books))
    return 1 if books.breaks else 0


if __name__ == "__main__":
    sys.exit(main())
