"""The replay venue serves a recording over real loopback WebSocket and HTTP connections."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from relay.captures import Frame, HttpResponse, Recording, dump_jsonl, load
from relay.replay import ReplayVenue, main

CAPTURE = Path(__file__).parent / "data" / "cryptofeed" / "BINANCE.ws.1.0"
SUBSCRIBE = '{"method":"SUBSCRIBE","params":["nknusdt@depth@100ms"],"id":1}'


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load(CAPTURE)


@asynccontextmanager
async def serving(venue: ReplayVenue) -> AsyncIterator[ReplayVenue]:
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.serve)
        yield venue
        nursery.cancel_scope.cancel()


async def receive_frames(ws: WebSocketConnection, count: int) -> list[str | bytes]:
    return [await ws.get_message() for _ in range(count)]


async def test_fast_playback_is_byte_exact_and_in_order(recording: Recording) -> None:
    expected = [frame.text for frame in recording.received]
    assert len(expected) == 265
    async with serving(ReplayVenue(recording, pace="fast")) as venue:
        assert venue.ws_url.startswith("ws://127.0.0.1:")
        assert venue.ws_url.endswith("/stream")
        async with open_websocket_url(venue.ws_url) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(10):
                received = await receive_frames(ws, len(expected))
        assert received == expected
        assert all(isinstance(text, str) for text in received)
        assert venue.connections == 1
        assert venue.frames_sent == 265


async def test_loops_repeat_the_whole_sequence(recording: Recording) -> None:
    expected = [frame.text for frame in recording.received] * 3
    async with serving(ReplayVenue(recording, pace="fast", loops=3, after_end="close")) as venue:
        async with open_websocket_url(venue.ws_url + "?streams=whatever") as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(10):
                received = await receive_frames(ws, len(expected))
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
        assert received == expected


async def test_recorded_pace_keeps_order_and_takes_the_scaled_time(recording: Recording) -> None:
    speed = 100.0
    span = (recording.received[-1].ts - recording.received[0].ts) / 1e9 / speed  # ~0.3 s
    expected = [frame.text for frame in recording.received]
    async with serving(ReplayVenue(recording, pace="recorded", speed=speed)) as venue:
        async with open_websocket_url(venue.ws_url) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(10):
                first = await ws.get_message()
                started = trio.current_time()
                rest = await receive_frames(ws, len(expected) - 1)
                elapsed = trio.current_time() - started
        assert [first, *rest] == expected
        # Deadlines are never early; allow for the first frame's own send/receive latency.
        assert elapsed >= span - 0.02


async def test_simultaneous_connections_each_get_the_full_playback(recording: Recording) -> None:
    expected = [frame.text for frame in recording.received]
    results: list[list[str | bytes]] = []

    async def client(url: str) -> None:
        async with open_websocket_url(url) as ws:
            await ws.send_message(SUBSCRIBE)
            results.append(await receive_frames(ws, len(expected)))

    # pace="recorded" with a speed-up keeps both playbacks running at the same time.
    async with serving(ReplayVenue(recording, pace="recorded", speed=300.0)) as venue:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client, venue.ws_url)
                nursery.start_soon(client, venue.ws_url)
        assert venue.connections == 2
        assert venue.frames_sent == 2 * len(expected)
    assert results == [expected, expected]


async def test_playback_waits_for_the_first_client_frame(recording: Recording) -> None:
    venue = ReplayVenue(recording, pace="fast", client_frame_timeout=30.0)
    async with serving(venue), open_websocket_url(venue.ws_url) as ws:
        with trio.move_on_after(0.3) as idle:
            await ws.get_message()
        assert idle.cancelled_caught, "a frame arrived before the client subscribed"
        await ws.send_message(SUBSCRIBE)
        with trio.fail_after(10):
            assert await ws.get_message() == recording.received[0].text


async def test_playback_starts_after_the_timeout_without_a_client_frame(
    recording: Recording,
) -> None:
    venue = ReplayVenue(recording, pace="fast", client_frame_timeout=0.2)
    async with serving(venue), open_websocket_url(venue.ws_url) as ws:
        with trio.fail_after(10):
            assert await ws.get_message() == recording.received[0].text


async def test_after_end_close_closes_cleanly(recording: Recording) -> None:
    async with serving(ReplayVenue(recording, pace="fast", after_end="close")) as venue:
        async with open_websocket_url(venue.ws_url) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(10):
                received = await receive_frames(ws, len(recording.received))
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
        assert received == [frame.text for frame in recording.received]
        assert closed.value.reason.code == 1000
        with trio.fail_after(5):
            while venue.active_connections:
                await trio.sleep(0.01)


async def test_after_end_idle_keeps_the_connection_open(recording: Recording) -> None:
    venue = ReplayVenue(recording, pace="fast", after_end="idle")
    async with serving(venue), open_websocket_url(venue.ws_url) as ws:
        await ws.send_message(SUBSCRIBE)
        with trio.fail_after(10):
            await receive_frames(ws, len(recording.received))
        with trio.move_on_after(0.3) as idle:
            await ws.get_message()
        assert idle.cancelled_caught
        assert not ws.closed
        with trio.fail_after(5):
            await ws.ping()  # the protocol layer still answers
        assert venue.active_connections == 1


@pytest.mark.parametrize("pace", ["fast", "recorded"])
async def test_a_client_leaving_mid_playback_ends_only_its_connection(
    recording: Recording, pace: Literal["fast", "recorded"]
) -> None:
    # speed=1: the recorded playback takes 30 s, so it is asleep between frames when the
    # client leaves and must be woken by the closed connection, not by its next send.
    venue = ReplayVenue(recording, pace=pace, loops=1000)
    async with serving(venue):
        async with open_websocket_url(venue.ws_url) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(10):
                await ws.get_message()
        with trio.fail_after(5):
            while venue.active_connections:
                await trio.sleep(0.01)
        async with open_websocket_url(venue.ws_url) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(10):
                assert await ws.get_message() == recording.received[0].text
        assert venue.connections == 2


async def test_rest_serves_recorded_bodies_and_404s_unknown_symbols(recording: Recording) -> None:
    nknusdt = next(r for r in recording.http if "symbol=NKNUSDT" in r.url)
    async with serving(ReplayVenue(recording, pace="fast")) as venue:
        assert venue.rest_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=venue.rest_url) as client:
            response = await client.get("/api/v3/depth?symbol=NKNUSDT&limit=1000")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.content == nknusdt.body.encode()

            # Other parameters are ignored; the keep-alive connection is reused.
            response = await client.get("/api/v3/depth", params={"symbol": "NKNUSDT", "limit": 5})
            assert response.status_code == 200
            assert response.content == nknusdt.body.encode()

            response = await client.get("/api/v3/depth?symbol=BTCUSDT&limit=1000")
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {
                "error": "no recorded response",
                "path": "/api/v3/depth",
                "symbol": "BTCUSDT",
            }

            assert (await client.get("/api/v3/ticker?symbol=NKNUSDT")).status_code == 404
            assert (await client.post("/api/v3/depth?symbol=NKNUSDT")).status_code == 405

            head = await client.head("/api/v3/depth?symbol=NKNUSDT")
            assert head.status_code == 200
            assert head.content == b""
            assert int(head.headers["content-length"]) == len(nknusdt.body.encode())
        assert venue.http_requests == 6


async def test_rest_answers_a_malformed_request_with_400(recording: Recording) -> None:
    async with serving(ReplayVenue(recording)) as venue:
        port = int(venue.rest_url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            response = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    response += chunk
    assert response.startswith(b"HTTP/1.1 400 ")


async def test_rest_serves_repeated_responses_in_recorded_order() -> None:
    url = "https://api.example.com/depth?symbol=BTC-USD"
    rec = Recording(
        http=[HttpResponse(1, url, '{"n":1}'), HttpResponse(2, url, '{"n":2}')],
    )
    async with (
        serving(ReplayVenue(rec)) as venue,
        httpx.AsyncClient(base_url=venue.rest_url) as client,
    ):
        bodies = [(await client.get("/depth?symbol=BTC-USD")).json()["n"] for _ in range(3)]
    assert bodies == [1, 2, 2]


async def test_jsonl_recording_replays_the_same(recording: Recording, tmp_path: Path) -> None:
    path = tmp_path / "binance.jsonl"
    dump_jsonl(recording, path)
    rec = load(path)
    expected = [frame.text for frame in recording.received]
    async with serving(ReplayVenue(rec, pace="fast")) as venue:
        async with open_websocket_url(venue.ws_url) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(10):
                assert await receive_frames(ws, len(expected)) == expected
        async with httpx.AsyncClient(base_url=venue.rest_url) as client:
            response = await client.get("/api/v3/depth?symbol=RUNEEUR&limit=1000")
    assert response.status_code == 200
    assert response.text == next(r.body for r in recording.http if "RUNEEUR" in r.url)


def numbered(count: int, gap: float) -> Recording:
    """``count`` frames ``"0"``, ``"1"``, ... recorded ``gap`` seconds apart."""
    return Recording(received=[Frame(int(i * gap * 1e9), str(i)) for i in range(count)])


async def test_drop_connections_resets_without_a_close_handshake(recording: Recording) -> None:
    venue = ReplayVenue(recording, pace="recorded", speed=1.0)  # 30 s: still playing
    async with serving(venue), open_websocket_url(venue.ws_url) as ws:
        await ws.send_message(SUBSCRIBE)
        with trio.fail_after(10):
            assert await ws.get_message() == recording.received[0].text
        assert venue.drop_connections() == 1
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 1006  # abnormal closure: no close frame came
        with trio.fail_after(5):
            while venue.active_connections:
                await trio.sleep(0.01)
        assert venue.drops == 1


async def test_drop_every_drops_each_connection_after_its_time(recording: Recording) -> None:
    venue = ReplayVenue(recording, pace="recorded", speed=1.0, drop_every=0.3)
    async with serving(venue):
        for _ in range(2):
            async with open_websocket_url(venue.ws_url) as ws:
                await ws.send_message(SUBSCRIBE)
                started = trio.current_time()
                with trio.fail_after(5), pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()
                assert trio.current_time() - started >= 0.25
        assert venue.connections == venue.drops == 2
        assert len(venue.connected_at) == 2


async def test_stall_after_stops_sending_but_keeps_answering_pings() -> None:
    rec = numbered(300, 0.01)  # 3 s of frames
    venue = ReplayVenue(rec, pace="recorded", stall_after=0.3)
    async with serving(venue), open_websocket_url(venue.ws_url) as ws:
        await ws.send_message(SUBSCRIBE)
        received = []
        with trio.move_on_after(1.0):
            while True:
                received.append(await ws.get_message())
        assert 10 <= len(received) <= 60, len(received)
        assert received == [str(i) for i in range(len(received))]
        assert len(venue.stalled_at) == 1
        assert trio.current_time() - venue.stalled_at[0] >= 0.5  # silent since
        with trio.fail_after(5):
            await ws.ping()
        assert not ws.closed
        assert venue.active_connections == 1


async def test_live_playback_lets_a_reconnect_join_where_the_feed_is() -> None:
    rec = numbered(400, 0.01)  # 4 s
    venue = ReplayVenue(rec, pace="recorded", live=True)
    async with serving(venue):
        assert venue.position == 0
        async with open_websocket_url(venue.ws_url) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(5):
                first = [await ws.get_message() for _ in range(20)]
        assert first == [str(i) for i in range(20)]
        await trio.sleep(0.5)  # the feed goes on while nobody listens
        async with open_websocket_url(venue.ws_url) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(5):
                second = [await ws.get_message() for _ in range(10)]
        joined = int(second[0])
        assert joined >= 60, "the second connection started over instead of joining"
        assert second == [str(i) for i in range(joined, joined + 10)]
        assert venue.position >= joined + 10
        played = venue.frames_played()
        assert played[:20] == first
        assert set(second) <= set(played)
        assert str(joined - 1) not in played[20:]  # what was due meanwhile was never sent


async def test_cut_responses_cut_a_body_in_the_middle_once(recording: Recording) -> None:
    nknusdt = next(r for r in recording.http if "symbol=NKNUSDT" in r.url).body.encode()
    venue = ReplayVenue(recording, pace="fast", cut_responses=1)
    async with serving(venue):
        async with httpx.AsyncClient(base_url=venue.rest_url) as client:
            with pytest.raises(httpx.TransportError):
                await client.get("/api/v3/depth?symbol=NKNUSDT")
            response = await client.get("/api/v3/depth?symbol=NKNUSDT")
            assert response.content == nknusdt
        assert venue.cuts == 1
        assert venue.cut_responses == 0
        # A cut may be armed again while serving.
        venue.cut_responses = 1
        port = int(venue.rest_url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /api/v3/depth?symbol=NKNUSDT HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        with trio.fail_after(5):
            try:
                while chunk := await stream.receive_some():
                    raw += chunk
            except trio.BrokenResourceError:
                pass  # the reset
        await stream.aclose()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert f"content-length: {len(nknusdt)}".encode() in head.lower()
        assert body == nknusdt[: len(nknusdt) // 2]
        assert venue.cuts == 2


async def test_rest_responder_answers_before_the_recording(recording: Recording) -> None:
    asked: list[tuple[str, str | None]] = []

    def responder(path: str, symbol: str | None) -> bytes | None:
        asked.append((path, symbol))
        return b'{"computed":true}' if symbol == "NKNUSDT" else None

    venue = ReplayVenue(recording, pace="fast", rest_responder=responder)
    async with serving(venue), httpx.AsyncClient(base_url=venue.rest_url) as client:
        computed = await client.get("/api/v3/depth?symbol=NKNUSDT&limit=1000")
        recorded = await client.get("/api/v3/depth?symbol=LRCBTC&limit=1000")
        unknown = await client.get("/api/v3/depth?symbol=BTCUSDT")
    assert (computed.status_code, computed.json()) == (200, {"computed": True})
    assert recorded.text == next(r.body for r in recording.http if "LRCBTC" in r.url)
    assert unknown.status_code == 404
    assert asked == [
        ("/api/v3/depth", "NKNUSDT"),
        ("/api/v3/depth", "LRCBTC"),
        ("/api/v3/depth", "BTCUSDT"),
    ]


async def test_serve_reports_a_taken_port_as_oserror(recording: Recording) -> None:
    async with serving(ReplayVenue(recording)) as first, trio.open_nursery() as nursery:
        ws_port = int(first.ws_url.rsplit(":", 1)[1].removesuffix("/stream"))
        http_port = int(first.rest_url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            await nursery.start(ReplayVenue(recording, ws_port=ws_port).serve)
        with pytest.raises(OSError):
            await nursery.start(ReplayVenue(recording, http_port=http_port).serve)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pace": "slow"},
        {"speed": 0},
        {"loops": 0},
        {"after_end": "reset"},
        {"host": "localhost"},
        {"ws_port": 70000},
        {"live": True, "pace": "fast"},
        {"drop_every": -1.0},
        {"stall_after": float("nan")},
        {"cut_responses": -1},
    ],
)
def test_invalid_options_are_rejected(recording: Recording, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ReplayVenue(recording, **kwargs)  # type: ignore[arg-type]


def test_urls_before_serving_raise(recording: Recording) -> None:
    with pytest.raises(RuntimeError):
        _ = ReplayVenue(recording).ws_url


def test_main_rejects_a_missing_capture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonexistent"]) == 2
    assert "nonexistent" in capsys.readouterr().err
    assert main(["nonexistent.jsonl"]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        [],
        [str(CAPTURE), "--pace", "slow"],
        [str(CAPTURE), "--loops", "0"],
        [str(CAPTURE), "--speed", "-1"],
        [str(CAPTURE), "--pace", "fast", "--speed", "2"],
        [str(CAPTURE), "--ws-port", "99999"],
    ],
)
def test_main_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


async def test_cli_prints_urls_serves_and_stops_on_sigterm(recording: Recording) -> None:
    code = "import sys; from relay.replay import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, str(CAPTURE), "--pace", "fast", "--after-end", "close"]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        output = b""
        with trio.fail_after(20):
            while output.count(b"\n") < 2:
                chunk = await proc.stdout.receive_some()
                assert chunk, "the CLI exited before printing its URLs"
                output += chunk
        lines = dict(line.split("=", 1) for line in output.decode().splitlines())
        assert set(lines) == {"ws_url", "rest_url"}
        async with open_websocket_url(lines["ws_url"]) as ws:
            await ws.send_message(SUBSCRIBE)
            with trio.fail_after(10):
                assert await ws.get_message() == recording.received[0].text
        async with httpx.AsyncClient(base_url=lines["rest_url"]) as client:
            assert (await client.get("/api/v3/depth?symbol=LRCBTC")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
