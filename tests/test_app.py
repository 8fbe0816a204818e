"""The nursery tree in-process: a venue that cannot start stays down alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

import adapters.binance
from relay import app
from relay.app import Relay
from relay.captures import load
from relay.config import load_config
from relay.natsd import NatsServer, free_port
from relay.replay import ReplayVenue
from tests.test_e2e import CAPTURE, write_config


async def test_a_venue_that_cannot_start_leaves_the_others_running(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venue = ReplayVenue(load(CAPTURE), pace="fast")
    make_codecs = adapters.binance.ADAPTER.make_codecs

    def refuse_spare(venue_id, subscriptions, endpoints, *, credentials):  # type: ignore[no-untyped-def]
        if venue_id == "binance-spare":
            raise ValueError("refused for this test")
        return make_codecs(venue_id, subscriptions, endpoints, credentials=credentials)

    patched = dataclasses.replace(adapters.binance.ADAPTER, make_codecs=refuse_spare)
    real_load = app.adapters.load
    monkeypatch.setattr(
        app.adapters, "load", lambda name: patched if name == "binance" else real_load(name)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        path = write_config(tmp_path / "relay.toml", nats_server.url, venue, free_port())
        spare = path.read_text().split("[[venues]]")[1]  # the binance venue block
        path.write_text(
            path.read_text()
            + "\n[[venues]]"
            + spare.replace('id = "binance"', 'id = "binance-spare"')
        )
        relay = Relay(load_config(path))
        stop = trio.Event()
        nursery.start_soon(relay.run, stop)
        with trio.fail_after(20):
            while relay.health.venues.get("binance") is None or (
                relay.health.venues["binance"].state != "streaming"
            ):
                await trio.sleep(0.05)
        spare_health = relay.health.venues["binance-spare"].as_dict(0)
        assert spare_health["state"] == "stopped"
        assert spare_health["last_error"] == "cannot start: refused for this test"
        assert not relay.health.healthy()
        stop.set()
        with trio.fail_after(15):
            while not relay.health.shutting_down:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


async def test_a_stop_before_nats_answers_ends_the_start_up(tmp_path: Path) -> None:
    # A port nothing listens on: the publisher keeps trying to connect, forever.
    venue = ReplayVenue(load(CAPTURE), pace="fast")
    async with trio.open_nursery() as outer:
        await outer.start(venue.serve)
        closed = f"nats://127.0.0.1:{free_port()}"
        path = write_config(tmp_path / "relay.toml", closed, venue, free_port())
        relay = Relay(load_config(path))
        stop = trio.Event()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay.run, stop)
                await trio.sleep(0.5)
                assert not relay.publisher.connected and not relay.health.venues
                stop.set()
                start = trio.current_time()
        print(f"relay.run returned {trio.current_time() - start:.2f} s after the stop")
        assert venue.connections == 0
        outer.cancel_scope.cancel()
