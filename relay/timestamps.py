"""Venue timestamps to event time: integer nanoseconds since the Unix epoch.

Events carry ``ts_venue`` in nanoseconds (:mod:`relay.events`); venues send milliseconds,
as JSON integers (multiply by :data:`NS_PER_MS`) or as decimal strings
(:func:`ms_text_to_ns`), or RFC 3339 text with up to nanosecond fractions
(:func:`rfc3339_ns`). The parsers are strict, and exact: no float is involved. A value
they reject raises ``ValueError``, which a codec reports as a ``parse_error``; so does a
time outside 1970 to 2262, whose nanoseconds would not fit the int64 that consumers in most
languages read ``ts_venue`` into (:data:`MAX_NS`).
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import Final

__all__ = ["MAX_NS", "NS_PER_MS", "check_ns", "ms_text_to_ns", "rfc3339_ns"]

NS_PER_MS: Final = 1_000_000
"""Nanoseconds per millisecond: epoch milliseconds times this are event nanoseconds."""

MAX_NS: Final = 2**63 - 1
"""The last event time an int64 holds (2262-04-11T23:47:16.854775807Z)."""


def check_ns(ns: int, text: str) -> int:
    """Return ``ns`` if it is an event time from 1970 to :data:`MAX_NS`, else raise
    ``ValueError`` naming ``text``, what the venue sent."""
    if not 0 <= ns <= MAX_NS:
        raise ValueError(f"a timestamp out of range: {text[:40]!r}")
    return ns


def ms_text_to_ns(text: str) -> int:
    """``"1597026383085"`` (epoch milliseconds as a decimal string) → nanoseconds.

    Stricter than ``int()``, which would also take ``" 1"``, ``"+1"``, ``"1_0"`` or
    non-ASCII digits: anything but plain ASCII digits raises ``ValueError``.
    """
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"not a millisecond timestamp: {text[:40]!r}")
    return check_ns(int(text) * NS_PER_MS, text)


_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=64)
def _day_seconds(year: str, month: str, day: str) -> int:
    """Seconds from the epoch to the start of the day; ``ValueError`` for no such date."""
    # Checking and converting the date is the slow part of a parse, and a stream stays on
    # one day for hours. (A date that raises is not cached.)
    return (date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL) * 86400


def rfc3339_ns(text: str) -> int:
    """``"2023-02-09T20:32:50.714964855Z"`` → integer nanoseconds since the epoch, exactly.

    Accepts ``T`` or ``t``, zero to 9 fractional digits, and ``Z``/``z`` or a numeric
    ``±HH:MM`` offset; a second of 60 (a leap second) counts as the next minute's first.
    Anything else, including an impossible date or time of day, raises ``ValueError``.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
    hour, minute, second = int(h), int(mi), int(s)
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    seconds = _day_seconds(y, mo, d) + hour * 3600 + minute * 60 + second
    if z is None:
        offset = int(oh) * 3600 + int(om) * 60
        seconds -= offset if sign == "+" else -offset
    nanos = int(frac.ljust(9, "0")) if frac else 0
    return check_ns(seconds * 1_000_000_000 + nanos, text)
