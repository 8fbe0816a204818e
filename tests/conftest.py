"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.natsd import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh ``nats-server -js`` on a free loopback port, its store under ``tmp_path``.

    Tests may ``kill()``/``stop()`` and ``start()`` it again: same URL, same store.
    """
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.close()
