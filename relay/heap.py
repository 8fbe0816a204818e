"""Hand the memory freed after a transient peak back to the operating system.

Place in the nursery tree (see :mod:`relay.app`): :func:`trim_heap_forever` runs in the
relay's root nursery, beside the sidecar, for as long as the relay runs.

Why: a backlog (JetStream slow for a second, a burst of snapshots) is held as Python objects
and freed once it drains, but glibc's ``malloc`` keeps most of what it got: it returns only
a large free block at the very top of an arena, never the free pages inside one, and each
thread has an arena of its own (the publisher's nats-py thread allocates its socket buffers
and PubAck batches in its own). So every peak ratchets the resident size up, and the relay
looks like it leaks to whatever watches RSS (an orchestrator's memory limit, a soak).
``malloc_trim(0)`` returns the whole free pages of every arena. It walks every free block
(a few milliseconds for a relay's heap, about 30 ms for 180 MB), so it runs in a worker
thread (ctypes drops the GIL) and the event loop never waits on it. Python's own
small-object arenas are not glibc's: each goes back to the system once it is empty.

Only glibc has ``malloc_trim``; elsewhere (musl, macOS) the task returns at once.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Final

import structlog
import trio

__all__ = ["TRIM_INTERVAL_SECS", "malloc_trim", "trim_heap_forever"]

log = structlog.get_logger(__name__)

TRIM_INTERVAL_SECS: Final = 10.0
"""Seconds between two trims: a peak is back with the system within this long."""


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


malloc_trim: Final = _find_malloc_trim()
"""glibc's ``malloc_trim(pad)`` (1 if it released memory), or None without glibc."""


async def trim_heap_forever(interval: float = TRIM_INTERVAL_SECS) -> None:
    """Every ``interval`` seconds, return the heap's free pages to the system; never
    returns where the C library cannot (it returns at once)."""
    trim = malloc_trim
    if trim is None:
        log.debug("no malloc_trim in this C library; freed heap memory stays with the relay")
        return
    while True:
        await trio.sleep(interval)
        await trio.to_thread.run_sync(trim, 0, abandon_on_cancel=True)
