"""Instrument metadata from a venue's own REST instrument list, sans-IO.

Adapters name instruments by the venue's spelling (``BTCUSDT``, ``linear:BTCUSDT``,
``BTC-USDT-SWAP``) and derive canonical symbols from that spelling alone, which is a guess
wherever the spelling has no delimiter or hides the kind. The venue's instrument list says
it outright: base and quote asset, perpetual or dated, tick and lot size, contract size,
whether it trades. This module holds what the runtime needs to use it, without doing any
I/O itself:

* :class:`Instrument`: one instrument as a venue lists it, in the relay's terms;
* :class:`InstrumentSource`: where an adapter's list comes from (the HTTP requests to make)
  and how a response body becomes instruments; an adapter publishes one as
  :attr:`relay.codec.Adapter.instruments`;
* :class:`Catalog`: one venue's instruments by native symbol, with a JSON form for an
  on-disk cache and :meth:`Catalog.resolve`, which fills configured subscriptions in from it.

The runtime fetches (``InstrumentSource.requests``), parses (``InstrumentSource.parse``),
builds a :class:`Catalog` with the time it fetched, and resolves subscriptions before it
makes codecs. Nothing here reads a clock or a file.

The helpers at the end (:func:`decode`, :func:`expiry_code`, :func:`epoch_ms`,
:func:`positive_decimal`, :func:`step_text`, :func:`decimal_text`, :func:`canonical`) are for
the adapters' parsers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal, TypeVar

import msgspec

from relay.codec import Endpoints, Subscription

__all__ = [
    "Catalog",
    "Instrument",
    "InstrumentSource",
    "Kind",
    "canonical",
    "decimal_text",
    "decode",
    "epoch_ms",
    "expiry_code",
    "positive_decimal",
    "step_text",
]

Kind = Literal["spot", "perp", "future"]
"""``spot`` (a cash pair, stocks included), ``perp`` (perpetual swap), ``future`` (dated)."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """One instrument as its venue lists it."""

    native_symbol: str
    """The venue's spelling exactly as the adapter's codec and the config use it, with the
    adapter's category prefix where it has one (Bybit ``linear:BTCUSDT``, Bitget
    ``USDT-FUTURES:BTCUSDT``)."""
    symbol: str
    """Canonical symbol: ``BASE-QUOTE`` (spot), ``BASE-QUOTE-PERP`` (perpetual),
    ``BASE-QUOTE-YYMMDD`` (dated future, the UTC expiry date)."""
    kind: Kind
    base: str
    quote: str
    price_increment: str | None
    """Tick size as the venue writes it (``"0.10"``); ``None`` where the venue has no
    fixed tick (Hyperliquid)."""
    size_increment: str | None
    """Lot size (order quantity step) as the venue writes it, in the venue's size unit;
    ``None`` where the venue gives none."""
    contract_size: Decimal | None
    """Base units per contract where the venue's sizes are fixed-size contracts (OKX linear
    swaps and futures, Coinbase futures); ``None`` where sizes are already base units, or
    where no fixed factor turns them into base units (inverse contracts sized in USD)."""
    active: bool
    """The venue lists the instrument as trading normally; ``False`` for halted,
    pre-launch, settling, delisted or otherwise restricted instruments."""


@dataclass(frozen=True, slots=True)
class InstrumentSource:
    """Where a venue's instrument list comes from, and how to read it.

    The runtime makes the HTTP requests of :meth:`requests` (each a GET, or a POST where a
    body is given), passes each response body with its URL to :attr:`parse`, and puts all
    instruments into one :class:`Catalog`. Any request failing means no catalog (a partial
    list would report the missing instruments as unlisted).
    """

    urls: Callable[[Endpoints], list[str]]
    """The URLs to fetch under the configured endpoints (usually ``rest_url``): several
    where the venue splits its list by category or currency."""
    parse: Callable[[str, bytes], list[Instrument]]
    """``(url, body)`` → the instruments in that response. Raises ``ValueError`` naming the
    venue and URL for a body that is not the documented shape, or an error answer."""
    bodies: Callable[[Endpoints], list[bytes | None]] | None = None
    """The request bodies, one per URL of :attr:`urls` in the same order: ``None`` for a
    GET, bytes for a POST of that JSON (``Content-Type: application/json``). ``None`` (the
    default): every URL is a GET. (Hyperliquid's ``/info`` takes POSTs only.)"""
    credential_headers: tuple[tuple[str, str], ...] = ()
    """``(HTTP header, credential name)`` pairs: the runtime must send each header with the
    value of that credential (a name of :attr:`relay.codec.Adapter.required_credentials`)
    on every request. Empty for public endpoints."""
    native_key: Callable[[Subscription], str] = field(default=lambda sub: sub.native_symbol)
    """The :attr:`Instrument.native_symbol` a configured subscription stands for: the
    adapter's normalisation of case and of an omitted category prefix. Pass it to
    :meth:`Catalog.resolve`. The default is the spelling itself."""

    def requests(self, endpoints: Endpoints) -> list[tuple[str, bytes | None]]:
        """``(url, body or None)`` for every request to make, in order.

        Raises ``ValueError`` when :attr:`bodies` does not give one body per URL (a bug in
        the adapter).
        """
        urls = self.urls(endpoints)
        if self.bodies is None:
            return [(url, None) for url in urls]
        bodies = self.bodies(endpoints)
        if len(bodies) != len(urls):
            raise ValueError(f"{len(urls)} instrument URLs but {len(bodies)} request bodies")
        return list(zip(urls, bodies, strict=True))


# ---------------------------------------------------------------------------------------------
# The catalog and its cache form


class _InstrumentRecord(msgspec.Struct, forbid_unknown_fields=True):
    native_symbol: str
    symbol: str
    kind: Kind
    base: str
    quote: str
    price_increment: str | None
    size_increment: str | None
    contract_size: Decimal | None
    active: bool


class _CatalogFile(msgspec.Struct, forbid_unknown_fields=True):
    fetched_at_ns: int
    instruments: list[_InstrumentRecord]


_catalog_decoder: Final = msgspec.json.Decoder(_CatalogFile)
_catalog_encoder: Final = msgspec.json.Encoder(decimal_format="string")


class Catalog:
    """The instruments of one venue by native symbol, and when they were fetched."""

    __slots__ = ("_by_native", "fetched_at_ns")

    def __init__(self, by_native: Mapping[str, Instrument], fetched_at_ns: int) -> None:
        """Prefer :meth:`from_instruments`; ``by_native`` must be keyed by native symbol."""
        self._by_native = dict(by_native)
        self.fetched_at_ns = fetched_at_ns
        """When the list was fetched (epoch ns, as the runtime's clock said); 0 if unknown."""

    @classmethod
    def from_instruments(
        cls, instruments: Iterable[Instrument], *, fetched_at_ns: int = 0
    ) -> Catalog:
        """A catalog of ``instruments`` (the parses of all of a source's responses).

        An instrument listed twice identically is kept once (responses may overlap);
        ``ValueError`` if two listings of one native symbol differ.
        """
        by_native: dict[str, Instrument] = {}
        for inst in instruments:
            seen = by_native.setdefault(inst.native_symbol, inst)
            if seen != inst:
                raise ValueError(f"{inst.native_symbol} listed twice differently: {seen}, {inst}")
        return cls(by_native, fetched_at_ns)

    def __len__(self) -> int:
        return len(self._by_native)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_native.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalog):
            return NotImplemented
        return self.fetched_at_ns == other.fetched_at_ns and self._by_native == other._by_native

    def __repr__(self) -> str:
        return f"Catalog({len(self)} instruments, fetched_at_ns={self.fetched_at_ns})"

    def get(self, native: str) -> Instrument | None:
        """The instrument listed as ``native`` (exact spelling), or ``None``."""
        return self._by_native.get(native)

    def resolve(
        self,
        subscriptions: Sequence[Subscription],
        overrides: Set[str] = frozenset(),
        *,
        key: Callable[[Subscription], str] = lambda sub: sub.native_symbol,
    ) -> tuple[list[Subscription], list[str]]:
        """Fill ``subscriptions`` in from the catalog; report the ones it lacks.

        Each subscription is looked up by ``key(sub)`` (pass the adapter's
        :attr:`InstrumentSource.native_key`). When found, its ``symbol`` becomes the
        instrument's canonical symbol, unless its native symbol is in ``overrides`` (the
        config set the canonical symbol), and its ``contract_size`` becomes the
        instrument's, unless it already has one (set explicitly). Native symbol and data
        types are kept.

        Returns the subscriptions in order (all of them: unlisted ones unchanged, inactive
        ones filled in like any other) and the native symbols, as spelled in the
        subscriptions and in order, that the venue does not list or lists as not active.
        What to do about those is the caller's decision.
        """
        resolved: list[Subscription] = []
        missing: list[str] = []
        for sub in subscriptions:
            inst = self._by_native.get(key(sub))
            if inst is None:
                resolved.append(sub)
                missing.append(sub.native_symbol)
                continue
            if not inst.active:
                missing.append(sub.native_symbol)
            symbol = sub.symbol if sub.native_symbol in overrides else inst.symbol
            contract_size = inst.contract_size if sub.contract_size is None else sub.contract_size
            resolved.append(replace(sub, symbol=symbol, contract_size=contract_size))
        return resolved, missing

    def to_json(self) -> bytes:
        """The catalog as JSON: ``{"fetched_at_ns": …, "instruments": [...]}``, instruments
        sorted by native symbol, contract sizes as strings (exact)."""
        records = [
            _InstrumentRecord(
                inst.native_symbol,
                inst.symbol,
                inst.kind,
                inst.base,
                inst.quote,
                inst.price_increment,
                inst.size_increment,
                inst.contract_size,
                inst.active,
            )
            for _, inst in sorted(self._by_native.items())
        ]
        return _catalog_encoder.encode(_CatalogFile(self.fetched_at_ns, records))

    @classmethod
    def from_json(cls, data: bytes) -> Catalog:
        """The catalog :meth:`to_json` wrote; ``ValueError`` for anything else."""
        try:
            file = _catalog_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not an instrument catalog: {exc}") from None
        instruments = []
        for r in file.instruments:
            if r.contract_size is not None and not (
                r.contract_size.is_finite() and r.contract_size > 0
            ):
                raise ValueError(f"not an instrument catalog: {r.native_symbol}: bad contract size")
            instruments.append(
                Instrument(
                    r.native_symbol,
                    r.symbol,
                    r.kind,
                    r.base,
                    r.quote,
                    r.price_increment,
                    r.size_increment,
                    r.contract_size,
                    r.active,
                )
            )
        return cls.from_instruments(instruments, fetched_at_ns=file.fetched_at_ns)


# ---------------------------------------------------------------------------------------------
# Helpers for the adapters' parsers

T = TypeVar("T")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def decode(venue: str, url: str, body: bytes, into: type[T]) -> T:
    """``body`` decoded as JSON into ``into``; ``ValueError`` naming ``venue`` and ``url``
    (and msgspec's path to the bad field) when it does not fit."""
    try:
        return msgspec.json.decode(body, type=into)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{venue}: unexpected instrument list from {url}: {exc}") from None


def positive_decimal(text: str, what: str) -> Decimal:
    """``text`` as a positive finite Decimal (a contract size); ``ValueError`` saying
    ``what`` it was otherwise."""
    try:
        value = Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation, for text that is no number
        value = Decimal("NaN")
    if not (value.is_finite() and value > 0):
        raise ValueError(f"{what}: not a positive number: {text!r}")
    return value


def epoch_ms(text: str, what: str) -> int:
    """Epoch milliseconds sent as text (``"1743148800000"``); ``ValueError`` saying ``what``
    it was otherwise."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what}: not a time in epoch milliseconds: {text!r}")
    return int(text)


def expiry_code(epoch_ms: int) -> str:
    """An expiry time in epoch milliseconds → its UTC date as ``YYMMDD``."""
    # Integer arithmetic: no float rounding of the timestamp.
    return (_EPOCH + timedelta(milliseconds=epoch_ms)).strftime("%y%m%d")


def step_text(decimals: int) -> str:
    """The step of a precision in decimal places: ``2`` → ``"0.01"``, ``0`` → ``"1"``."""
    if decimals < 0:
        raise ValueError(f"negative precision: {decimals}")
    return format(Decimal(1).scaleb(-decimals), "f")


def decimal_text(value: Decimal | None) -> str | None:
    """A number the venue sent as a JSON number, as plain text (``5e-05`` → ``"0.00005"``)."""
    return None if value is None else format(value, "f")


def canonical(base: str, quote: str, kind: Kind, expiry: str | None = None) -> str:
    """``BASE-QUOTE``, ``BASE-QUOTE-PERP`` or ``BASE-QUOTE-<expiry>`` (``expiry`` is the
    ``YYMMDD`` of a future; required for that kind only)."""
    if kind == "spot":
        return f"{base}-{quote}"
    if kind == "perp":
        return f"{base}-{quote}-PERP"
    if expiry is None:
        raise ValueError(f"{base}-{quote}: a future needs an expiry")
    return f"{base}-{quote}-{expiry}"
