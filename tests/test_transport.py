"""The WebSocket seam against the real replay venue, over loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from relay.captures import Recording, load
from relay.replay import AfterEnd, ReplayVenue
from relay.transport import Connection, TransportClosed, connect

CAPTURE = Path(__file__).parent / "data" / "cryptofeed" / "BINANCE.ws.1.0"
SUBSCRIBE = '{"method":"SUBSCRIBE","params":["nknusdt@depth@100ms"],"id":1}'
BURST_LIMIT = 512


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load(CAPTURE)


@asynccontextmanager
async def venue_connection(
    recording: Recording, *, after_end: AfterEnd = "idle"
) -> AsyncIterator[tuple[ReplayVenue, Connection]]:
    """A fast replay venue and a transport connection to it."""
    venue = ReplayVenue(recording, pace="fast", after_end=after_end)
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        with trio.fail_after(10):
            async with connect(venue.ws_url, connect_timeout=5) as conn:
                yield venue, conn
        nursery.cancel_scope.cancel()


async def receive_bursts(conn: Connection, count: int) -> list[list[str | bytes]]:
    bursts: list[list[str | bytes]] = []
    with trio.fail_after(10):
        while sum(map(len, bursts)) < count:
            bursts.append(await conn.receive_burst(BURST_LIMIT))
    return bursts


async def fall_behind() -> None:
    """Let the venue write ahead of us, as a fast feed does to a busy relay."""
    await trio.sleep(0.2)


async def test_all_frames_arrive_byte_exact_in_order_and_in_bursts(
    recording: Recording,
) -> None:
    expected = [frame.text for frame in recording.received]
    assert len(expected) == 265
    async with venue_connection(recording) as (venue, conn):
        # The venue streams only once it got our first frame: this also proves send().
        await conn.send(SUBSCRIBE)
        await fall_behind()
        bursts = await receive_bursts(conn, len(expected))
        assert venue.frames_sent == 265
    received = [frame for burst in bursts for frame in burst]
    assert received == expected
    assert all(isinstance(frame, str) for frame in received)
    assert max(map(len, bursts)) > 1, "a fast feed must come in bursts, not frame by frame"


async def test_bursts_stop_at_the_limit_and_lose_nothing(recording: Recording) -> None:
    async with venue_connection(recording) as (_, conn):
        await conn.send(SUBSCRIBE)
        await fall_behind()
        bursts = [await conn.receive_burst(3) for _ in range(10)]
        assert [len(burst) for burst in bursts] == [3] * 10
        more = await receive_bursts(conn, 265 - 30)
    assert [frame for burst in bursts + more for frame in burst] == [
        frame.text for frame in recording.received
    ]


async def test_venue_closing_raises_transport_closed_with_its_code(
    recording: Recording,
) -> None:
    async with venue_connection(recording, after_end="close") as (_, conn):
        await conn.send(SUBSCRIBE)
        frames = 0
        with pytest.raises(TransportClosed) as closed:
            while True:
                frames += len(await conn.receive_burst(BURST_LIMIT))
        assert frames == 265
        assert closed.value.reason.startswith("closed by venue: 1000")
        with pytest.raises(TransportClosed):
            await conn.send(SUBSCRIBE)


async def test_ping_returns_when_the_venue_answers(recording: Recording) -> None:
    async with venue_connection(recording) as (_, conn):
        await conn.send(SUBSCRIBE)
        await receive_bursts(conn, 265)
        with trio.fail_after(5):
            await conn.ping()
            await conn.ping()


async def test_connecting_to_a_closed_port_raises_transport_closed_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        url = f"ws://127.0.0.1:{port}/stream"
        with trio.fail_after(2), pytest.raises(TransportClosed) as failed:
            async with connect(url, connect_timeout=5):
                pytest.fail("connected to a closed port")
    assert failed.value.reason.startswith(url)


async def test_body_exceptions_and_cancellation_pass_through(recording: Recording) -> None:
    class Boom(Exception):
        pass

    venue = ReplayVenue(recording, pace="fast")
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        with pytest.raises(Boom):
            async with connect(venue.ws_url) as conn:
                await conn.send(SUBSCRIBE)
                raise Boom
        with trio.move_on_after(0.2) as scope:
            async with connect(venue.ws_url) as conn:
                await trio.sleep_forever()
        assert scope.cancelled_caught
        nursery.cancel_scope.cancel()
