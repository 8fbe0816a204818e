"""Circuit breaker for one venue connection: closed → open → half-open → closed.

A pure state machine; the caller passes the time. It never stops reconnection for good:
an open breaker only spaces attempts, holding them back for ``reset_timeout`` seconds after
``failure_threshold`` failures in a row, then lets ``half_open_max`` trial attempts through.
"""

from __future__ import annotations

from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failure_threshold: int, reset_timeout: float, half_open_max: int) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_max = half_open_max
        self.state: BreakerState = "closed"
        self.consecutive_failures = 0
        self._opened_at = 0.0
        self._trials = 0

    def wait_time(self, now: float) -> float:
        """Seconds until an attempt may be made; moves open → half-open when that is 0."""
        if self.state == "open":
            remaining = self._opened_at + self.reset_timeout - now
            if remaining > 0:
                return remaining
            self.state = "half_open"
            self._trials = 0
        if self.state == "half_open" and self._trials >= self.half_open_max:
            # Every trial slot is taken and none has reported back: a failure reopens.
            return self.reset_timeout
        return 0.0

    def attempt(self) -> None:
        """An attempt starts now (call after :meth:`wait_time` returned 0)."""
        if self.state == "half_open":
            self._trials += 1

    def success(self) -> None:
        self.state = "closed"
        self.consecutive_failures = 0

    def failure(self, now: float) -> None:
        self.consecutive_failures += 1
        if self.state == "half_open" or self.consecutive_failures >= self.failure_threshold:
            self.state = "open"
            self._opened_at = now
