"""The contract between a sans-IO venue codec (``adapters/<venue>.py``) and the I/O shell.

A codec is a pure state machine for one WebSocket connection, in the style of h11 and
wsproto: the shell hands it frames with the time they were read, and it returns normalized
events. What the codec needs done in the world (send a frame, fetch a REST snapshot, drop
the connection) it queues as *actions*, which the shell drains with :meth:`Codec.actions`
after every call. A codec never touches a socket, a clock or trio, and it never raises
out of :meth:`Codec.receive`: a frame it cannot understand becomes a ``parse_error``
:class:`~relay.events.VenueStatus`.

An adapter module exposes one :class:`Adapter` object named ``ADAPTER``, which turns the
configured subscriptions of a venue into one codec per connection it needs.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from relay.events import DataType, MarketEvent


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


Action = SendFrame | FetchSnapshot | Reconnect


@dataclass(slots=True)
class CodecCounters:
    """Monotonic counts the shell exports as Prometheus metrics (per venue)."""

    frames: int = 0
    parse_errors: int = 0
    book_gaps: int = 0
    book_resyncs: int = 0
    checksum_failures: int = 0
    stale_deltas_dropped: int = 0


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

    @abc.abstractmethod
    def receive(self, data: str | bytes, recv_ns: int) -> list[MarketEvent]:
        """Decode one frame into events. Never raises."""

    def keepalive(self) -> str | None:
        """The application-level ping frame to send every ``ping_interval``, if any."""
        return None

    def snapshot_received(self, key: str, body: bytes, recv_ns: int) -> list[MarketEvent]:
        """The REST snapshot asked for by ``FetchSnapshot(key, ...)`` arrived."""
        return []

    def snapshot_failed(self, key: str, reason: str) -> list[MarketEvent]:
        """The REST snapshot for ``key`` could not be fetched."""
        return []


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
