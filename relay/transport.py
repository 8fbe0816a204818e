"""The WebSocket seam: the only module that knows which WebSocket library the relay uses.

The venue shell (:mod:`relay.venue`) talks to a :class:`Connection`; swapping the library
(``websockets.trio`` today) means rewriting this module only. Frames are read in *bursts*:
every frame already received by the time the reader wakes up, so downstream channels move
lists, not single frames.

``websockets.trio`` reads the socket in one task that parses everything a read returned and
queues all the frames at once, so a burst is simply what is queued after the first frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import BINARY, TEXT, Frame
from websockets.protocol import CLOSED
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect

MAX_MESSAGE_SIZE = 16 * 2**20
"""Frames larger than this close the connection; the biggest venue snapshots are ~2 MiB."""
MAX_QUEUE = 4096
"""Frames queued before the library stops reading the socket (it resumes at a quarter).
A single socket read can hold hundreds of small frames; the library's default of 16 would
pause reading after nearly every read."""
CLOSE_TIMEOUT = 2.0
"""Seconds to wait for the venue's half of the closing handshake before dropping the socket."""


class TransportClosed(Exception):
    """The connection is gone; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """An open WebSocket connection to a venue."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def receive_burst(self, limit: int) -> list[str | bytes]:
        """Wait for at least one frame, then return up to ``limit`` already received.

        Text frames come as ``str``, binary frames as ``bytes``.
        """
        try:
            frames: list[str | bytes] = [await self._ws.recv()]
        except ConnectionClosed as exc:
            raise TransportClosed(_close_reason(exc)) from None
        if limit > 1:
            frames += _take_queued(self._ws, limit - 1)
        return frames

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise TransportClosed(_close_reason(exc)) from None

    async def ping(self) -> None:
        """Send a WebSocket ping and wait for its pong."""
        try:
            pong = await self._ws.ping(ack_on_close=True)
            await pong.wait()
        except ConnectionClosed as exc:
            raise TransportClosed(_close_reason(exc)) from None
        # ack_on_close wakes us when the connection dies instead of leaving us to the
        # caller's timeout; then the connection's state tells which of the two it was.
        if self._ws.state is CLOSED:
            raise TransportClosed(_close_reason(self._ws.close_exc))


def _take_queued(ws: ClientConnection, limit: int) -> list[str | bytes]:
    """Up to ``limit`` complete messages the library has already queued, without blocking.

    The only place that relies on ``websockets.trio`` internals (17.x): the connection's
    ``Assembler`` (``ws.recv_messages``) keeps received frames in a trio memory channel
    (``recv_frames``), and its deque is peeked at so that a frame is taken only when it is
    a whole text or binary message that decodes. Anything else (the first fragment of a
    fragmented message, invalid UTF-8) stays queued for the next ``recv()``, which
    reassembles it or fails the connection with the proper close code. Without these
    internals the burst is the one message ``recv()`` returned.
    """
    assembler = getattr(ws, "recv_messages", None)
    channel: trio.MemoryReceiveChannel[Frame] | None = getattr(assembler, "recv_frames", None)
    queued: deque[Frame] | None = getattr(getattr(channel, "_state", None), "data", None)
    if assembler is None or channel is None or not isinstance(queued, deque):
        return []
    messages: list[str | bytes] = []
    while queued and len(messages) < limit:
        frame = queued[0]
        if not frame.fin:
            break
        if frame.opcode is TEXT:
            try:
                message: str | bytes = frame.data.decode()
            except UnicodeDecodeError:
                break
        elif frame.opcode is BINARY:
            message = bytes(frame.data)
        else:
            break
        channel.receive_nowait()  # the frame just peeked at, taken through the public API
        messages.append(message)
    # The reader pauses itself above MAX_QUEUE frames and only a receiver resumes it;
    # recv() does this per frame, so taking frames past it must do it too.
    assembler.maybe_resume()
    return messages


def _close_reason(exc: ConnectionClosed) -> str:
    """A ``ConnectionClosed`` in words: who closed first, with what code, or what broke."""
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        reason = f"closed by venue: {exc.rcvd.code} {exc.rcvd.reason}".strip()
    elif exc.sent is not None:
        # We failed the connection, e.g. 1009 for a frame above MAX_MESSAGE_SIZE.
        reason = f"closed by us: {exc.sent.code} {exc.sent.reason}".strip()
    else:
        reason = "connection lost without a closing handshake"
    cause = exc.__cause__
    if cause is not None:
        # The close reason often is the cause's message (1009 "frame with N bytes exceeds
        # limit of M bytes" for PayloadTooBig): name the cause then, without repeating it.
        text = str(cause)
        detail = "" if text and text in reason else f": {text}"
        reason += f" ({type(cause).__name__}{detail})"
    return reason


@asynccontextmanager
async def connect(url: str, *, connect_timeout: float = 10.0) -> AsyncIterator[Connection]:
    """Open a WebSocket to ``url``; raise :class:`TransportClosed` when it cannot be opened
    or breaks.

    Exceptions raised by the body pass through unchanged (the library unwraps them from the
    nursery that runs its reader task); so does cancellation.
    """
    opened = False
    try:
        client = ws_connect(
            url,
            open_timeout=connect_timeout,
            # The venue shell pings after 20 s without a frame and times the pong itself; a
            # second, library-driven keepalive would only add pings. Pings from the venue
            # (Binance: every 20 s) are still answered by the library, always.
            ping_interval=None,
            ping_timeout=None,
            close_timeout=CLOSE_TIMEOUT,
            max_size=MAX_MESSAGE_SIZE,
            max_queue=MAX_QUEUE,
            # As before the switch: no permessage-deflate (inflating costs CPU on the one core
            # the relay has) and no proxy from the environment (venues are dialled directly).
            compression=None,
            proxy=None,
        )
        async with client as ws:
            opened = True
            yield Connection(ws)
    except (OSError, WebSocketException) as exc:
        if opened:
            raise  # the body's own exception: not ours to translate
        # OSError covers refused connections and TimeoutError (open_timeout).
        raise TransportClosed(f"{url}: {exc}") from exc
