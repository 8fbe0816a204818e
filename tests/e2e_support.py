"""Helpers shared by the end-to-end tests (``test_e2e.py``, ``test_e2e_venues.py``).

They drive a real relay subprocess (``python -m relay run``) and read its sidecar; the
JetStream side is in :mod:`tests.jetstream`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio


@asynccontextmanager
async def relay_process(config: Path, log: Path) -> AsyncIterator[trio.Process]:
    """``python -m relay run -c config`` with its stderr (the JSON log) appended to ``log``.

    Killed on exit if still running, so a failing test never leaves a relay behind.
    """
    with log.open("ab") as stderr:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "relay", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def eventually(check: Callable[[], object], timeout: float = 20.0) -> None:
    """Await ``check()`` (sync or async) until it returns truthy."""
    with trio.fail_after(timeout):
        while True:
            result = check()
            if hasattr(result, "__await__"):
                result = await result  # type: ignore[misc]
            if result:
                return
            await trio.sleep(0.1)


def metric(text: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels, e.g. ``x_total{venue="a"}``) in a
    Prometheus exposition; 0 when absent, as for a counter never incremented."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
