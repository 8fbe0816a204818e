"""The heap trimmer: on glibc it gives freed memory back, on a schedule."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import relay.heap
from relay.heap import TRIM_INTERVAL_SECS, malloc_trim, trim_heap_forever


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(malloc_trim is None, reason="not glibc")
def test_malloc_trim_returns_fragmented_free_memory() -> None:
    # Blocks above pymalloc's 512 bytes come from glibc; keeping every 8th one leaves the
    # heap full of holes that free() alone does not give back.
    blocks = [bytes(700 + i % 2000) for i in range(100_000)]
    kept = blocks[::8]
    del blocks
    before = _rss_kib()
    assert malloc_trim is not None
    malloc_trim(0)
    after = _rss_kib()
    print(f"RSS {before} KiB -> {after} KiB after malloc_trim, {len(kept)} blocks kept")
    assert after < before - 20_000


def test_trims_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(relay.heap, "malloc_trim", calls.append)

    async def main() -> None:
        with trio.move_on_after(3.5 * TRIM_INTERVAL_SECS):
            await trim_heap_forever()

    # The clock jumps only once nothing has run for 50 ms of real time: never while the
    # trim's worker thread is running.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.05))
    assert calls == [0, 0, 0]


def test_without_malloc_trim_it_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay.heap, "malloc_trim", None)
    trio.run(trim_heap_forever)
