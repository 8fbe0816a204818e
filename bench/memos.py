"""The codecs' module-level memos, and how to empty them all: ``just bench-peer``'s cold figures.

The codecs memoize what they compute from a venue's text (the Decimal of a number, that a
number passed its checks, the nanoseconds of a second): bounded dicts and sets at module
level, kept across connections, because a live stream repeats numbers all the time (the
prices at the top of a book, round sizes, zero). A benchmark that replays a short capture
over and over repeats *every* number, so from its second pass on every lookup hits and the
figure flatters the codec. :func:`forget_memos` empties them: a pass that starts after it
finds only what its own frames put there, as a stream would on its first encounter with
those numbers.

``tests/test_bench_peer.py`` decodes the bench captures and checks that everything at
module level in ``relay`` and ``adapters`` that grows while decoding is emptied here: a new
memo that is not listed fails it.
"""

from __future__ import annotations

from collections.abc import Callable

import adapters._common
import adapters.kraken
import relay.book
import relay.events
import relay.timestamps

__all__ = ["forget_memos"]

MEMOS: tuple[Callable[[], None], ...] = (
    relay.book._prices.clear,
    relay.book._sizes.clear,
    relay.book._negated.clear,
    relay.events._checked_nums.clear,
    relay.events._checked_non_negative.clear,
    relay.timestamps._day_seconds.cache_clear,
    adapters._common._seconds.clear,
    adapters.kraken._prices.clear,
    adapters.kraken._price_texts.clear,
    adapters.kraken._sizes.clear,
    adapters.kraken._size_texts.clear,
    adapters.kraken._parts.clear,
)
"""How to empty each memo (their names are private to their modules: this is a bench)."""


def forget_memos() -> None:
    """Empty every module-level memo of the codecs."""
    for clear in MEMOS:
        clear()
