"""Live state that the pipeline's tasks write and the HTTP sidecar reads.

Plain objects on the trio thread: tasks update fields as things happen, and the sidecar
renders a consistent snapshot of them for ``/health``, ``/readyz`` and ``/livez``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

ConnectionState = Literal["connecting", "streaming", "backoff", "circuit_open", "stopped"]
VenueState = ConnectionState | Literal["disabled"]

# Order of badness: a venue reports its worst connection.
_RANK: dict[ConnectionState, int] = {
    "streaming": 0,
    "connecting": 1,
    "backoff": 2,
    "circuit_open": 3,
    "stopped": 4,
}


@dataclass(slots=True)
class ConnectionHealth:
    url: str
    state: ConnectionState = "connecting"
    last_frame_ns: int | None = None
    frames: int = 0
    reconnects: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class VenueHealth:
    venue: str
    adapter: str
    connections: list[ConnectionHealth] = field(default_factory=list)
    events: int = 0
    disabled: str | None = None
    """Why the venue is not started (e.g. missing credentials); ``None`` when it runs."""
    start_error: str | None = None
    """Why the venue could not start (it stays ``stopped``, which is unhealthy)."""
    unknown_symbols: list[str] = field(default_factory=list)
    """Configured symbols the venue does not list (or lists as inactive): not subscribed."""
    stale_streams: list[str] = field(default_factory=list)
    """Streams of streaming connections silent beyond their threshold (``BTC-USDT/trade``);
    reported only: a stale stream does not make the venue unhealthy."""

    @property
    def state(self) -> VenueState:
        if self.disabled is not None:
            return "disabled"
        if not self.connections:
            return "stopped"
        return max((c.state for c in self.connections), key=_RANK.__getitem__)

    def as_dict(self, now_ns: int) -> dict[str, object]:
        last = max((c.last_frame_ns or 0 for c in self.connections), default=0)
        errors = [c.last_error for c in self.connections if c.last_error]
        if self.start_error:
            errors.append(self.start_error)
        return {
            "state": self.state if self.disabled is None else f"disabled: {self.disabled}",
            "adapter": self.adapter,
            "connections": len(self.connections),
            "streaming": sum(c.state == "streaming" for c in self.connections),
            "last_frame_age_s": round((now_ns - last) / 1e9, 3) if last else None,
            "frames": sum(c.frames for c in self.connections),
            "events": self.events,
            "reconnects": sum(c.reconnects for c in self.connections),
            "last_error": errors[-1] if errors else None,
            "unknown_symbols": self.unknown_symbols,
            "stale_streams": self.stale_streams,
        }


class PublisherState(Protocol):
    connected: bool
    provisioned: bool
    in_flight: int
    backlog: int
    last_error: str | None


@dataclass(slots=True)
class RelayHealth:
    venues: dict[str, VenueHealth] = field(default_factory=dict)
    publisher: PublisherState | None = None
    shutting_down: bool = False

    def ready(self) -> bool:
        p = self.publisher
        return p is not None and p.connected and p.provisioned and not self.shutting_down

    def healthy(self) -> bool:
        # A disabled venue was configured off (no credentials): reported, never unhealthy.
        return self.ready() and all(
            v.state in ("streaming", "disabled") for v in self.venues.values()
        )

    def as_dict(self) -> dict[str, object]:
        now = time.time_ns()
        p = self.publisher
        return {
            "status": "ok" if self.healthy() else "degraded",
            "ready": self.ready(),
            "shutting_down": self.shutting_down,
            "nats": {
                "connected": bool(p and p.connected),
                "streams_provisioned": bool(p and p.provisioned),
                "in_flight": p.in_flight if p else 0,
                "backlog": p.backlog if p else 0,
                "last_error": p.last_error if p else None,
            },
            "venues": {name: v.as_dict(now) for name, v in self.venues.items()},
        }
