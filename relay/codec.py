"""The contract between a sans-IO venue codec (``adapters/<venue>.py``) and the I/O shell.

A codec is a pure state machine for one WebSocket connection, in the style of h11 and
wsproto: the shell hands it frames with the time they were read, and it returns normalized
events. What the codec needs done in the world (send a frame, fetch a REST snapshot, drop
the connection) it queues as *actions*, which the shell drains with :meth:`Codec.actions`
after every call. A codec never touches a socket, a clock or trio, and it never raises
out of :meth:`Codec.receive`: a frame it cannot understand becomes a ``parse_error``
:class:`~relay.events.VenueStatus`.

:class:`Codec` also carries what every venue codec does the same way: the never-raise
guard around :meth:`Codec._receive`, and the builders of status events, which keep each
status and its :class:`CodecCounters` count together.

An adapter module exposes one :class:`Adapter` object named ``ADAPTER``, which turns the
configured subscriptions of a venue into one codec per connection it needs.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from typing import TYPE_CHECKING, ClassVar, Final, Protocol, TypeVar

import msgspec

from relay.events import DataType, MarketEvent, VenueStatus

if TYPE_CHECKING:
    # relay.instruments imports this module (Endpoints, Subscription); the annotation is
    # only a string here (``from __future__ import annotations``), so no cycle at run time.
    from relay.instruments import InstrumentSource

STATUS_DETAIL_MAX: Final = 200
"""Characters of a status ``detail`` that are kept: it goes into every status message."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One instrument and the data types wanted for it."""

    native_symbol: str
    """The venue's own spelling: ``BTCUSDT``, ``BTC-USDT-SWAP``, ``BTC/USD``."""
    symbol: str
    """Canonical symbol: ``BTC-USDT``."""
    data_types: frozenset[DataType]
    contract_size: Decimal | None = None
    """Base units per contract where the venue sizes in fixed-size contracts (OKX swaps and
    futures); codecs multiply sizes by it. ``None``: sizes are already in base units.
    (Inverse contracts sized in USD, like Deribit's, have no fixed factor; see that codec.)"""


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a venue lives; config may point these at a local replay venue."""

    ws_url: str
    rest_url: str


# ---------------------------------------------------------------------------------------------
# Actions: what a codec asks the shell to do.


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send this text frame on the connection (the shell paces to ``max_send_rate``)."""

    text: str


@dataclass(frozen=True, slots=True)
class FetchSnapshot:
    """GET ``url`` and hand the body to :meth:`Codec.snapshot_received` under ``key``.

    On failure the shell calls :meth:`Codec.snapshot_failed`; the codec decides whether to
    ask again.
    """

    key: str
    url: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Close this connection and open a fresh one (e.g. the venue announced a shutdown)."""

    reason: str
    planned: bool = False
    """``True`` when the connection is healthy but must be replaced (the venue announced a
    shutdown or an upgrade): the shell opens the new connection, with a new codec, before
    it closes this one (make-before-break). ``False`` (an error this connection cannot
    mend): this one is closed first, then reopened."""


Action = SendFrame | FetchSnapshot | Reconnect


@dataclass(slots=True)
class CodecCounters:
    """Monotonic counts a codec keeps; :class:`relay.metrics.Metrics` exports all but
    ``frames`` (the shell counts frames read) per venue when Prometheus scrapes."""

    frames: int = 0
    parse_errors: int = 0
    book_gaps: int = 0
    book_resyncs: int = 0
    checksum_failures: int = 0
    stale_deltas_dropped: int = 0


class SymbolState(Protocol):
    """What a codec's per-instrument state shows of itself in a status event."""

    @property
    def symbol(self) -> str:
        """The canonical symbol."""
        ...

    @property
    def native(self) -> str:
        """The venue's spelling, as stamped on the instrument's events."""
        ...


class BookState(SymbolState, Protocol):
    """Per-instrument state of a codec that keeps the instrument's book."""

    @property
    def synced(self) -> bool:
        """Whether the book has been built from its snapshot and no resync is under way."""
        ...


B = TypeVar("B", bound=BookState)


class Codec(abc.ABC):
    """One connection's protocol state. Subclassed once per venue."""

    venue: str
    """The venue id from config; stamped on every event."""
    url: str
    """The WebSocket URL to connect to."""
    max_send_rate: float = 5.0
    """Client frames per second the venue tolerates; the shell paces :class:`SendFrame`."""
    ping_interval: float | None = None
    """Seconds between client-initiated keepalives; ``None`` when the venue pings us."""
    max_lifetime: float | None = None
    """Seconds after which the venue cuts the connection; the shell reconnects before."""
    bad_frame_errors: ClassVar[tuple[type[Exception], ...]] = (msgspec.DecodeError,)
    """What :meth:`receive` reports as a malformed frame (``bad frame: …``) when
    :meth:`_receive` raises it; any other exception is reported as a bug of ours
    (``internal error: …``). ``msgspec.DecodeError`` covers its ``ValidationError``, and
    with it the ``ValueError`` of a Struct's ``__post_init__``."""

    def __init__(self) -> None:
        self._actions: list[Action] = []
        self.counters = CodecCounters()

    def actions(self) -> list[Action]:
        """Return and clear the actions queued since the last call."""
        queued, self._actions = self._actions, []
        return queued

    @abc.abstractmethod
    def connected(self, now_ns: int) -> list[MarketEvent]:
        """A new connection is open: reset per-connection state, queue subscribe frames."""

    def receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        """Decode one frame into events. Never raises.

        Counts the frame (``counters.frames``) and hands it to :meth:`_receive`. An
        exception out of that becomes a ``parse_error`` status (``counters.parse_errors``)
        rather than kill the connection: ``bad frame: …`` for :attr:`bad_frame_errors`, for
        a binary frame that is not UTF-8, for nesting too deep to decode and for decimal
        arithmetic failing on absurd numbers; ``internal error: …`` for anything else.
        """
        self.counters.frames += 1
        try:
            if type(data) is not str:
                # A binary frame is JSON only as UTF-8: msgspec does not check the bytes of
                # what it skips (unknown keys, Raw payloads), so check them all here.
                data = data.decode()
            return self._receive(data, recv_ns)
        except self.bad_frame_errors as exc:
            return [self._parse_error(f"bad frame: {exc}", recv_ns)]
        except (UnicodeDecodeError, RecursionError, DecimalException) as exc:
            # Not UTF-8; nested deeper than the decoder goes; a number too large or too
            # precise for decimal arithmetic (``1E+999999999`` times a contract size).
            return [self._parse_error(f"bad frame: {type(exc).__name__}: {exc}", recv_ns)]
        except Exception as exc:
            return [self._parse_error(f"internal error: {type(exc).__name__}: {exc}", recv_ns)]

    def _receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        """The venue's decoding of one frame, guarded by :meth:`receive`; may raise.

        Every venue codec implements this. (Not abstract, so that a codec which replaces
        :meth:`receive` itself need not; that codec keeps the never-raise promise alone.)
        """
        raise NotImplementedError

    def keepalive(self) -> str | None:
        """The application-level ping frame to send every ``ping_interval``, if any."""
        return None

    def snapshot_received(self, key: str, body: bytes, recv_ns: int) -> list[MarketEvent]:
        """The REST snapshot asked for by ``FetchSnapshot(key, ...)`` arrived."""
        return []

    def snapshot_failed(self, key: str, reason: str) -> list[MarketEvent]:
        """The REST snapshot for ``key`` could not be fetched."""
        return []

    def resync(self, symbol: str, reason: str, recv_ns: int) -> list[MarketEvent]:
        """Rebuild the book of canonical ``symbol`` from a fresh snapshot, by the venue's own
        sync rules: downstream dropped one of its deltas (``reason`` says why).

        Returns the ``book_resync`` status (and any events) and queues the actions that get
        the snapshot. Until that snapshot is published, the codec publishes no delta of
        that book. Asked again while that snapshot is awaited, it reports the status and
        asks the venue for nothing more. A symbol without a book on this connection is
        ignored. This default reopens the whole connection; venue codecs do better.
        """
        self._actions.append(Reconnect(f"resync of {symbol} asked for: {reason}"))
        return []

    @property
    def synced(self) -> bool:
        """Whether every book on this connection has been built from its snapshot (true for
        a connection without books; a book the venue refused to subscribe does not count).
        A planned reconnect opens the new connection, waits for this, then closes the old
        one."""
        return True

    # -- status events -------------------------------------------------------------------------
    # ``detail`` is cut to STATUS_DETAIL_MAX characters. The builders named after a counter
    # also count it, so that every such status is counted exactly once.

    def _status(
        self, kind: str, detail: str, recv_ns: int, *, ts_venue: int | None = None
    ) -> VenueStatus:
        """A status of ``kind`` about the whole connection (empty symbols)."""
        return VenueStatus(
            venue=self.venue,
            symbol="",
            native_symbol="",
            ts_venue=ts_venue,
            ts_recv=recv_ns,
            kind=kind,
            detail=detail[:STATUS_DETAIL_MAX],
        )

    def _symbol_status(
        self, state: SymbolState, kind: str, detail: str, recv_ns: int
    ) -> VenueStatus:
        """A status of ``kind`` about one instrument (its book, its subscription)."""
        return VenueStatus(
            venue=self.venue,
            symbol=state.symbol,
            native_symbol=state.native,
            ts_venue=None,
            ts_recv=recv_ns,
            kind=kind,
            detail=detail[:STATUS_DETAIL_MAX],
        )

    def _parse_error(self, detail: str, recv_ns: int) -> VenueStatus:
        """A ``parse_error`` status; counts ``parse_errors``."""
        self.counters.parse_errors += 1
        return self._status("parse_error", detail, recv_ns)

    def _book_gap(self, state: SymbolState, detail: str, recv_ns: int) -> VenueStatus:
        """A ``book_gap`` status for ``state``'s book; counts ``book_gaps``."""
        self.counters.book_gaps += 1
        return self._symbol_status(state, "book_gap", detail, recv_ns)

    def _book_resync(self, state: SymbolState, detail: str, recv_ns: int) -> VenueStatus:
        """A ``book_resync`` status for ``state``'s book; counts ``book_resyncs``."""
        self.counters.book_resyncs += 1
        return self._symbol_status(state, "book_resync", detail, recv_ns)

    def _checksum_mismatch(self, state: SymbolState, detail: str, recv_ns: int) -> VenueStatus:
        """A ``checksum_mismatch`` status for ``state``'s book; counts ``checksum_failures``."""
        self.counters.checksum_failures += 1
        return self._symbol_status(state, "checksum_mismatch", detail, recv_ns)

    def _resync_books(
        self,
        books: Iterable[B],
        symbol: str,
        reason: str,
        recv_ns: int,
        start: Callable[[B, str, list[MarketEvent]], None],
    ) -> list[MarketEvent]:
        """:meth:`resync` for codecs that resync a book by asking the venue again: for each
        of ``books`` of canonical ``symbol``, ``start(state, detail, out)`` drops it and asks
        (appending its ``book_resync`` status to ``out``), unless its snapshot is awaited
        already, which gets the status alone."""
        out: list[MarketEvent] = []
        for state in books:
            if state.symbol != symbol:
                continue
            if state.synced:
                start(state, f"resync asked for: {reason}", out)
            else:
                detail = f"resync asked for: {reason}; its snapshot is awaited already"
                out.append(self._book_resync(state, detail, recv_ns))
        return out


class MakeCodecs(Protocol):
    def __call__(
        self,
        venue: str,
        subscriptions: Sequence[Subscription],
        endpoints: Endpoints,
        *,
        credentials: Mapping[str, str] = ...,
    ) -> list[Codec]:
        """One codec per connection needed for ``subscriptions`` of venue id ``venue``.

        ``credentials`` holds the venue's configured secrets (API keys), keyed by the names
        in :attr:`Adapter.required_credentials`.
        """
        ...


@dataclass(frozen=True, slots=True)
class Adapter:
    """What an adapter module exports as ``ADAPTER``."""

    name: str
    data_types: frozenset[DataType]
    default_endpoints: Endpoints
    make_codecs: MakeCodecs = field(repr=False)
    canonical_symbol: Callable[[str], str | None] = field(repr=False)
    """Native symbol to canonical, or ``None`` when the adapter cannot tell."""
    required_credentials: tuple[str, ...] = ()
    """Credential names the venue needs (e.g. ``("key_id", "secret_key")``); a venue
    configured without them is reported as disabled instead of started."""
    instruments: InstrumentSource | None = field(default=None, repr=False)
    """Where the venue's instrument list comes from (REST requests and their parser), from
    which the runtime resolves canonical symbols, kinds and contract sizes; see
    :mod:`relay.instruments`. ``None``: the adapter derives symbols from their spelling
    only (:attr:`canonical_symbol`)."""
