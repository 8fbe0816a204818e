"""The replay venue: a local stand-in for a venue, serving a :class:`~relay.captures.Recording`.

The relay's tests, ``just demo`` and the benchmarks point a venue's ``ws_url`` and
``rest_url`` at a :class:`ReplayVenue` instead of the real exchange. It listens on loopback
and speaks the real protocols, so the relay runs its production I/O path unchanged:

* **WebSocket** (trio-websocket, any path): every connection gets its own playback of the
  recorded frames, sent as text messages exactly as recorded, either as fast as the socket
  takes them or with the recorded gaps between them (optionally sped up).
* **HTTP** (a small h11 server): ``GET <path>?<query>`` answers with the REST response
  recorded for the same path and ``symbol`` query parameter, e.g. the depth snapshots a
  Binance codec fetches to seed its order books.

The venue does not interpret what the client sends: it only waits for the first frame (the
subscribe request) before it starts talking, like a venue that streams once subscribed.

For fault-injection tests it can also misbehave the way real venues do: drop every
connection after a while (a TCP reset, no close handshake), stall (stop sending but keep the
socket open and answer pings), cut a REST response in the middle of its body, and play one
live feed that a reconnecting client joins where it is now rather than from the start.

Command line (``relay replay CAPTURE ...``, or ``python -m relay.replay``): :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import math
import signal
import socket
import struct
import sys
from bisect import bisect_right
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from relay.captures import Recording, RecordingError, load

Pace = Literal["recorded", "fast"]
AfterEnd = Literal["idle", "close"]

_HTTP_RECEIVE_SIZE = 65536
_CLOSE_TIMEOUT = 5.0
"""Seconds to wait for the client's half of the close handshake with ``after_end="close"``."""
_HttpKey = tuple[str, str | None]
"""How a REST request is matched to recorded responses: (URL path, ``symbol`` parameter)."""
RestResponder = Callable[[str, str | None], bytes | None]
"""Computes a REST body at request time from (URL path, ``symbol`` parameter)."""
_LINGER_RESET = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on with a zero timeout: closing the socket sends a TCP reset."""


async def _reset(stream: trio.abc.Stream) -> None:
    """Close ``stream`` with a TCP reset (no FIN, no WebSocket close), as a crashed venue or a
    middlebox dropping the connection would; a plain close for other kinds of stream."""
    if isinstance(stream, trio.SocketStream):
        with contextlib.suppress(OSError):
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.aclose()


class _ResponseCut(Exception):
    """A REST response was cut mid-body on purpose; its connection is gone."""


class _Connection:
    """One WebSocket connection's playback state, for :meth:`ReplayVenue.drop_connections`."""

    __slots__ = ("dropped", "played", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.dropped = False
        self.played = [0, 0]
        """Timeline positions sent on this connection: ``[first, end)``."""

    def drop(self) -> None:
        self.dropped = True
        self.scope.cancel()


def _http_key(target: str) -> _HttpKey:
    """The match key of a URL or request target: its path and its first ``symbol`` value.

    Other query parameters (``limit`` and the like) are ignored on purpose: the client may ask
    for a different depth than was recorded, and the recorded body is the only one there is.
    """
    parts = urlsplit(target)
    symbols = parse_qs(parts.query, keep_blank_values=True).get("symbol")
    return unquote(parts.path) or "/", symbols[0] if symbols else None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ReplayVenue:
    """Serve one recording over WebSocket and HTTP on a local address.

    :param recording: what to serve: ``recording.received`` are the WebSocket frames,
        ``recording.http`` the REST responses (``recording.sent`` is not used).
    :param pace: ``"recorded"`` keeps the recorded gaps between frames, divided by ``speed``;
        ``"fast"`` sends each frame as soon as the previous one is written.
    :param speed: time compression for ``pace="recorded"`` (2.0 plays twice as fast); ignored
        for ``pace="fast"``.
    :param loops: how many times each connection is played the whole frame sequence. With
        ``pace="recorded"``, a new loop starts right after the last frame of the previous one.
    :param wait_for_client_frame: hold playback on a new connection until the client sent its
        first text message (typically the subscribe request), or until
        ``client_frame_timeout`` seconds passed, whichever comes first. ``False`` starts
        streaming as soon as the handshake completes.
    :param client_frame_timeout: see ``wait_for_client_frame``.
    :param after_end: what a connection does after its last frame: ``"idle"`` keeps it open
        and silent until the client leaves, as a venue with no more traffic would (WebSocket
        pings are still answered); ``"close"`` closes it with a normal (1000) close handshake.
    :param host: the IP address both servers bind to (an address, not a name, so that each
        server has exactly one listener and one port).
    :param ws_port: the WebSocket server's port; 0 picks a free one.
    :param http_port: the HTTP server's port; 0 picks a free one.
    :param live: one playback shared by all connections, as on a real venue, instead of a
        playback of its own for each: the clock starts when the first connection starts
        playing, and a later connection (a reconnect) joins at the first frame not yet due,
        so what was due while no connection was open is lost to the client. Needs
        ``pace="recorded"``. :attr:`position` says how far the feed is.
    :param drop_every: drop each WebSocket connection this many seconds after it was
        accepted, with a TCP reset and no close handshake (0: never). See also
        :meth:`drop_connections`.
    :param stall_after: each connection stops sending frames this many seconds after its
        playback started, yet stays open: it keeps reading the client and answering its
        pings, as a stalled venue does (0: never).
    :param cut_responses: the next this many REST responses with status 200 to a GET are cut
        in the middle of their body: the headers (announcing the whole ``Content-Length``)
        and half the body are sent, then the connection is reset. The attribute of the same
        name may be set while serving.
    :param rest_responder: computes a body at request time, from the path and ``symbol``
        parameter of a GET or HEAD (e.g. a depth snapshot matching a live feed's
        :attr:`position`); the body is answered with status 200, and ``None`` falls back to
        the recorded responses.

    HTTP: each request is matched on its path and ``symbol`` query parameter against the
    recorded URLs. When several recorded responses match, successive requests (on any
    connection) get them in recorded order, and the last one repeats from then on. Unmatched
    requests get 404, methods other than GET and HEAD get 405, both with a JSON error body.

    Counters, for tests and benchmarks: :attr:`connections` (WebSocket connections accepted),
    :attr:`active_connections`, :attr:`frames_sent` (over all connections),
    :attr:`http_requests`, :attr:`drops` and :attr:`cuts`; the times (``trio.current_time()``)
    of :attr:`connected_at` and :attr:`stalled_at`; and :meth:`frames_played`, every frame
    of the timeline sent on at least one connection.
    """

    def __init__(
        self,
        recording: Recording,
        *,
        pace: Pace = "recorded",
        speed: float = 1.0,
        loops: int = 1,
        wait_for_client_frame: bool = True,
        client_frame_timeout: float = 1.0,
        after_end: AfterEnd = "idle",
        host: str = "127.0.0.1",
        ws_port: int = 0,
        http_port: int = 0,
        live: bool = False,
        drop_every: float = 0.0,
        stall_after: float = 0.0,
        cut_responses: int = 0,
        rest_responder: RestResponder | None = None,
    ) -> None:
        if pace not in get_args(Pace):
            raise ValueError(f"pace must be 'recorded' or 'fast', not {pace!r}")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, not {speed!r}")
        if loops < 1:
            raise ValueError(f"loops must be at least 1, not {loops!r}")
        if client_frame_timeout < 0:
            raise ValueError(f"client_frame_timeout must be >= 0, not {client_frame_timeout!r}")
        if after_end not in get_args(AfterEnd):
            raise ValueError(f"after_end must be 'idle' or 'close', not {after_end!r}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"host must be an IP address such as 127.0.0.1, not {host!r}"
            ) from None
        for name, port in (("ws_port", ws_port), ("http_port", http_port)):
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be in 0..65535, not {port!r}")
        if live and pace != "recorded":
            raise ValueError("live needs pace='recorded': a live feed has a clock")
        for name, seconds in (("drop_every", drop_every), ("stall_after", stall_after)):
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, not {seconds!r}")
        if cut_responses < 0:
            raise ValueError(f"cut_responses must be >= 0, not {cut_responses!r}")

        self.recording = recording
        self.pace: Pace = pace
        self.speed = speed
        self.loops = loops
        self.wait_for_client_frame = wait_for_client_frame
        self.client_frame_timeout = client_frame_timeout
        self.after_end: AfterEnd = after_end
        self.host = host
        self.ws_port = ws_port
        self.http_port = http_port
        self.live = live
        self.drop_every = drop_every
        self.stall_after = stall_after
        self.cut_responses = cut_responses
        """REST responses still to cut mid-body; may be set while serving."""
        self.rest_responder = rest_responder

        self.connections = 0
        """WebSocket connections accepted since construction."""
        self.active_connections = 0
        """WebSocket connections currently open."""
        self.frames_sent = 0
        """Frames written, summed over all connections."""
        self.http_requests = 0
        """HTTP requests answered (any status)."""
        self.drops = 0
        """WebSocket connections the venue dropped (``drop_every``, :meth:`drop_connections`)."""
        self.cuts = 0
        """REST responses cut mid-body (``cut_responses``)."""
        self.connected_at: list[float] = []
        """``trio.current_time()`` at each WebSocket connection accepted."""
        self.stalled_at: list[float] = []
        """``trio.current_time()`` at each connection's stall (``stall_after``)."""

        self._texts = [frame.text for frame in recording.received]
        # Playback schedule in seconds after the first frame at speed 1. Clamped to be
        # non-decreasing so that a clock step in the recording cannot make time run backwards.
        self._offsets: list[float] = []
        if recording.received:
            first = recording.received[0].ts
            latest = 0.0
            for frame in recording.received:
                latest = max(latest, (frame.ts - first) / 1e9)
                self._offsets.append(latest)
        self._responses: dict[_HttpKey, list[bytes]] = {}
        for response in recording.http:
            key = _http_key(response.url)
            self._responses.setdefault(key, []).append(response.body.encode())
        self._served: dict[_HttpKey, int] = {}
        """How many times each key was answered; picks the next recorded response."""
        self._open: set[_Connection] = set()
        self._played: list[list[int]] = []
        self._live_start: float | None = None
        """With ``live``: when the shared playback started (the first connection's start)."""
        self._ws_url: str | None = None
        self._rest_url: str | None = None
        self._serving = False

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/stream``; available once :meth:`serve` has started."""
        if self._ws_url is None:
            raise RuntimeError("the replay venue has not started serving yet")
        return self._ws_url

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT`` (no trailing slash); available once :meth:`serve` has started."""
        if self._rest_url is None:
            raise RuntimeError("the replay venue has not started serving yet")
        return self._rest_url

    @property
    def position(self) -> int:
        """How far the feed is, in frames of the timeline (all loops one after the other).

        With ``live``: the frames due by now on the shared clock (0 before the first
        connection plays), whether or not a connection has sent them yet. Otherwise: the most
        frames any one connection has sent.
        """
        if not self.live:
            return max((end for _, end in self._played), default=0)
        if self._live_start is None:
            return 0
        return self._due(trio.current_time() - self._live_start)

    def frames_played(self) -> list[str]:
        """The frames of the timeline sent on at least one connection, in timeline order, each
        once however many connections sent it."""
        texts, n = self._texts, len(self._texts)
        out: list[str] = []
        end = 0
        for first, last in sorted(self._played):
            out += [texts[i % n] for i in range(max(first, end), last)]
            end = max(end, last)
        return out

    def drop_connections(self) -> int:
        """Drop every open WebSocket connection now (TCP reset, no close handshake); returns
        how many were dropped."""
        open_now = list(self._open)
        for conn in open_now:
            conn.drop()
        return len(open_now)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run both servers until cancelled.

        Use as ``await nursery.start(venue.serve)``: it reports started once both servers
        listen, after which :attr:`ws_url` and :attr:`rest_url` are valid. One ``serve`` at a
        time per venue.
        """
        if self._serving:
            raise RuntimeError("this replay venue is already serving")
        self._serving = True
        listeners: list[trio.SocketListener] = []
        try:
            # Bind both sockets before starting anything, so that a taken port surfaces as a
            # plain OSError from serve() (through nursery.start) rather than from inside a
            # nursery. An IP-literal host gives exactly one listener per server.
            ws_listeners = await trio.open_tcp_listeners(self.ws_port, host=self.host)
            listeners += ws_listeners
            http_listeners = await trio.open_tcp_listeners(self.http_port, host=self.host)
            listeners += http_listeners
            ws_server = WebSocketServer(self._handle_ws, ws_listeners)
            host = _url_host(self.host)
            self._ws_url = f"ws://{host}:{ws_server.port}/stream"
            self._rest_url = f"http://{host}:{http_listeners[0].socket.getsockname()[1]}"
            async with trio.open_nursery() as nursery:
                await nursery.start(ws_server.run)
                await nursery.start(trio.serve_listeners, self._handle_http, http_listeners)
                task_status.started()
        finally:
            # The servers close their listeners when cancelled, but not if we fail or are
            # cancelled before they start; closing twice is harmless.
            for listener in listeners:
                listener.socket.close()
            self._serving = False

    # -----------------------------------------------------------------------------------------
    # WebSocket

    async def _handle_ws(self, request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        self.connections += 1
        self.active_connections += 1
        self.connected_at.append(trio.current_time())
        conn = _Connection()
        self._open.add(conn)
        self._played.append(conn.played)
        try:
            with conn.scope:
                await self._converse(ws, conn)
        finally:
            self._open.discard(conn)
            self.active_connections -= 1
        if conn.dropped:
            self.drops += 1
            # The stream is trio-websocket's; resetting it under the connection makes its
            # reader see a closed stream, which it handles as an abnormal closure.
            await _reset(ws._stream)

    async def _converse(self, ws: WebSocketConnection, conn: _Connection) -> None:
        async with trio.open_nursery() as nursery:
            first_frame = trio.Event()
            nursery.start_soon(self._drain, ws, first_frame, nursery.cancel_scope)
            if self.drop_every:
                nursery.start_soon(self._drop_after, conn, self.drop_every)
            if self.wait_for_client_frame:
                with trio.move_on_after(self.client_frame_timeout):
                    await first_frame.wait()
            stall_at = trio.current_time() + self.stall_after if self.stall_after else math.inf
            try:
                if self.pace == "fast":
                    ended = await self._play_fast(ws, conn.played, stall_at)
                else:
                    ended = await self._play_recorded(ws, conn.played, stall_at)
            except ConnectionClosed:
                nursery.cancel_scope.cancel()  # the client left mid-playback
                return
            if not ended:
                self.stalled_at.append(trio.current_time())
            elif self.after_end == "close":
                # aclose() waits for the client's close frame; don't wait forever for a
                # client that never sends it (the stream is closed either way).
                with trio.move_on_after(_CLOSE_TIMEOUT):
                    await ws.aclose()
            # Idle (or stalled): the nursery now waits for _drain, i.e. for the client to
            # leave, answering pings meanwhile.

    @staticmethod
    async def _drop_after(conn: _Connection, seconds: float) -> None:
        await trio.sleep(seconds)
        conn.drop()

    async def _drain(
        self, ws: WebSocketConnection, first_frame: trio.Event, scope: trio.CancelScope
    ) -> None:
        """Read and discard client messages for the connection's lifetime.

        Reading matters even though nothing is answered: trio-websocket only processes pings
        and the close handshake while its message queue has room. When the connection ends,
        cancel ``scope`` so that a playback sleeping until its next frame stops too.
        """
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, str):
                    first_frame.set()
        except ConnectionClosed:
            scope.cancel()

    async def _play_fast(self, ws: WebSocketConnection, played: list[int], stall_at: float) -> bool:
        """Play the whole timeline; False when it stopped at ``stall_at`` instead."""
        send = ws.send_message
        texts = self._texts
        stalls = stall_at < math.inf
        for _ in range(self.loops):
            for text in texts:
                if stalls and trio.current_time() >= stall_at:
                    return False
                # No sleep: send_message is a checkpoint and blocks on TCP backpressure, which
                # is all the pacing "fast" wants.
                await send(text)
                played[1] += 1
                self.frames_sent += 1
        return True

    async def _play_recorded(
        self, ws: WebSocketConnection, played: list[int], stall_at: float
    ) -> bool:
        """Play the timeline at the recorded pace; False when it stopped at ``stall_at``.

        Deadlines are absolute (start + offset), so time spent sending does not accumulate as
        drift; a client that reads slowly gets the frames it fell behind on back to back.
        A stall is checked before each frame, never by cancelling a send mid-frame.
        """
        send = ws.send_message
        texts, offsets = self._texts, self._offsets
        n = len(texts)
        now = trio.current_time()
        first = 0
        if not self.live:
            start = now
        elif self._live_start is None:
            start = self._live_start = now
        else:
            start = self._live_start
            first = self._due(now - start)
        played[0] = played[1] = first
        loop_length = offsets[-1] if offsets else 0.0
        for i in range(first, n * self.loops):
            loop, j = divmod(i, n)
            deadline = start + (loop * loop_length + offsets[j]) / self.speed
            if deadline > trio.current_time():
                if deadline >= stall_at:
                    await trio.sleep_until(stall_at)
                    return False
                await trio.sleep_until(deadline)
            elif trio.current_time() >= stall_at:
                return False
            await send(texts[j])
            played[1] = i + 1
            self.frames_sent += 1
        return True

    def _due(self, elapsed: float) -> int:
        """Frames of the timeline due ``elapsed`` seconds after the playback started."""
        n, total = len(self._offsets), len(self._offsets) * self.loops
        if n == 0:
            return 0
        t = elapsed * self.speed
        loop_length = self._offsets[-1]
        if loop_length <= 0:
            return total
        loop = min(max(int(t // loop_length), 0), self.loops - 1)
        return min(total, loop * n + bisect_right(self._offsets, t - loop * loop_length))

    # -----------------------------------------------------------------------------------------
    # HTTP

    async def _handle_http(self, stream: trio.SocketStream) -> None:
        """Serve one HTTP/1.1 connection (keep-alive included) with h11."""
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next_http_event(conn, stream)
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    # A GET has no body, but read to the end of whatever was sent so that h11
                    # is in a state where the connection can be reused.
                    while not isinstance(
                        await self._next_http_event(conn, stream), h11.EndOfMessage
                    ):
                        pass
                    try:
                        await self._respond(conn, stream, event)
                    except _ResponseCut:
                        return  # the connection was reset mid-body on purpose
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                else:
                    return  # "Connection: close" from either side, or HTTP/1.0
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                body = msgspec.json.encode({"error": f"bad request: {exc}"})
                # Best effort: the client may already be gone.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._send_response(
                        conn, stream, exc.error_status_hint, body, include_body=True
                    )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            await stream.aclose()

    @staticmethod
    async def _next_http_event(conn: h11.Connection, stream: trio.SocketStream) -> h11.Event:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is not h11.NEED_DATA:
                # PAUSED: only possible once a request is complete and before it is answered,
                # and _handle_http never reads in that window.
                raise RuntimeError(f"h11 returned {event!r} while a request was being read")
            # b"" at EOF tells h11 the peer closed; it then yields ConnectionClosed or raises.
            conn.receive_data(await stream.receive_some(_HTTP_RECEIVE_SIZE))

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> None:
        self.http_requests += 1
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            body = msgspec.json.encode({"error": f"method {method} not allowed"})
            await self._send_response(
                conn, stream, 405, body, include_body=True, extra=[(b"allow", b"GET, HEAD")]
            )
            return
        key = _http_key(request.target.decode("ascii", "replace"))
        responses = self._responses.get(key)
        computed = self.rest_responder(*key) if self.rest_responder is not None else None
        if computed is not None:
            body = computed
            status = 200
        elif responses is None:
            path, symbol = key
            body = msgspec.json.encode(
                {"error": "no recorded response", "path": path, "symbol": symbol}
            )
            status = 404
        else:
            served = self._served.get(key, 0)
            self._served[key] = served + 1
            body = responses[min(served, len(responses) - 1)]
            status = 200
        if status == 200 and method == "GET" and self.cut_responses > 0 and len(body) > 1:
            self.cut_responses -= 1
            self.cuts += 1
            await self._send_cut(conn, stream, body)
            raise _ResponseCut
        await self._send_response(conn, stream, status, body, include_body=method == "GET")

    @staticmethod
    async def _send_cut(conn: h11.Connection, stream: trio.SocketStream, body: bytes) -> None:
        """Headers announcing all of ``body``, half of it, then a TCP reset."""
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        data = conn.send(h11.Response(status_code=200, headers=headers))
        data += conn.send(h11.Data(data=body[: len(body) // 2]))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)
        # Let the half body reach the client before the reset, which would discard it.
        await trio.sleep(0.05)
        await _reset(stream)

    @staticmethod
    async def _send_response(
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        body: bytes,
        *,
        include_body: bool,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        # For HEAD the headers (Content-Length included) are those a GET would get; h11 knows
        # the request was HEAD and would reject body bytes, hence include_body.
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        data = conn.send(h11.Response(status_code=status, headers=headers))
        if include_body and body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)


# ---------------------------------------------------------------------------------------------
# Command line


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535: {text!r}")
    return value


def _ip_address(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay replay",
        description=(
            "Serve a recorded venue session over WebSocket and HTTP on a local address. "
            "Prints ws_url=... and rest_url=... on stdout, then serves until SIGINT/SIGTERM."
        ),
    )
    parser.add_argument(
        "capture", type=Path, help="a *.jsonl recording or a cryptofeed NAME.ws.N.M capture"
    )
    parser.add_argument(
        "--pace",
        choices=get_args(Pace),
        default="recorded",
        help="keep the recorded gaps between frames, or send as fast as possible "
        "(default: recorded)",
    )
    parser.add_argument(
        "--speed",
        type=_positive_float,
        default=None,
        help="divide the recorded gaps by this factor (--pace recorded only; default: 1)",
    )
    parser.add_argument(
        "--loops",
        type=_positive_int,
        default=1,
        help="play the frames this many times per connection (default: 1)",
    )
    parser.add_argument(
        "--host",
        type=_ip_address,
        default="127.0.0.1",
        help="IP address to bind (default: %(default)s)",
    )
    parser.add_argument(
        "--ws-port", type=_port, default=0, help="WebSocket port (default: 0, a free port)"
    )
    parser.add_argument(
        "--http-port", type=_port, default=0, help="HTTP port (default: 0, a free port)"
    )
    parser.add_argument(
        "--after-end",
        choices=get_args(AfterEnd),
        default="idle",
        help="after the last frame keep the connection open and silent, or close it "
        "(default: idle)",
    )
    return parser


async def _serve_until_signalled(venue: ReplayVenue) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(venue.serve)
            except OSError as exc:
                print(f"relay replay: error: cannot listen: {exc}", file=sys.stderr)
                return 1
            print(f"ws_url={venue.ws_url}", flush=True)
            print(f"rest_url={venue.rest_url}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return 0


def main(argv: list[str] | None = None) -> int:
    """``relay replay``: serve a capture until SIGINT/SIGTERM.

    Returns the exit status: 0 after a signal, 2 for a usage error or a capture that does not
    load, 1 when a server cannot listen (e.g. the port is taken).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the error (or --help)
        return exc.code if isinstance(exc.code, int) else 2
    if args.speed is not None and args.pace != "recorded":
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: --speed applies to --pace recorded only", file=sys.stderr)
        return 2
    try:
        recording = load(args.capture)
    except (RecordingError, OSError, UnicodeDecodeError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    venue = ReplayVenue(
        recording,
        pace=args.pace,
        speed=args.speed or 1.0,
        loops=args.loops,
        after_end=args.after_end,
        host=args.host,
        ws_port=args.ws_port,
        http_port=args.http_port,
    )
    print(
        f"replaying {len(recording.received)} frames and {len(recording.http)} REST responses "
        f"from {args.capture}",
        file=sys.stderr,
        flush=True,
    )
    return trio.run(_serve_until_signalled, venue)


if __name__ == "__main__":
    sys.exit(main())
