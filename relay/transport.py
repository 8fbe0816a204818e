"""The WebSocket seam: the only module that knows which WebSocket library the relay uses.

The venue shell (:mod:`relay.venue`) talks to a :class:`Connection`; swapping the library
(trio-websocket today) means rewriting this module only. Frames are read in *bursts*: every
frame already queued by the time the reader wakes up, so downstream channels move lists, not
single frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

MAX_MESSAGE_SIZE = 16 * 2**20
"""Frames larger than this close the connection; the biggest venue snapshots are ~2 MiB."""
MESSAGE_QUEUE_SIZE = 4096
RECEIVE_BUFFER_SIZE = 256 * 2**10


class TransportClosed(Exception):
    """The connection is gone; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """An open WebSocket connection to a venue."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        # trio-websocket queues complete messages in this channel; draining it without
        # blocking is what turns a read into a burst.
        self._queue: trio.MemoryReceiveChannel[str | bytes] = ws._recv_channel

    async def receive_burst(self, limit: int) -> list[str | bytes]:
        """Wait for at least one frame, then return up to ``limit`` already queued.

        trio-websocket's reader hands over one message per scheduling round, so right after
        the first frame nothing else is queued yet. Yielding while the queue keeps growing
        lets the reader decode the rest of what the socket already delivered: the batch
        follows the venue's burst instead of being one frame.
        """
        queue = self._queue
        try:
            frames = [await queue.receive()]
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise TransportClosed(_close_reason(self._ws)) from None
        while len(frames) < limit:
            try:
                frames.append(queue.receive_nowait())
            except trio.WouldBlock:
                if not await self._reader_had_more(queue):
                    break
            except (trio.EndOfChannel, trio.ClosedResourceError):
                break
        return frames

    @staticmethod
    async def _reader_had_more(queue: trio.MemoryReceiveChannel[str | bytes]) -> bool:
        """Let the reader run once; whether it queued another frame meanwhile."""
        await trio.lowlevel.cancel_shielded_checkpoint()
        return queue.statistics().current_buffer_used > 0

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise TransportClosed(str(exc.reason)) from None

    async def ping(self) -> None:
        """Send a WebSocket ping and wait for its pong."""
        try:
            await self._ws.ping()
        except trio_websocket.ConnectionClosed as exc:
            raise TransportClosed(str(exc.reason)) from None


def _close_reason(ws: trio_websocket.WebSocketConnection) -> str:
    reason = ws.closed
    return f"closed by venue: {reason.code} {reason.reason or ''}".strip() if reason else "closed"


@asynccontextmanager
async def connect(url: str, *, connect_timeout: float = 10.0) -> AsyncIterator[Connection]:
    """Open a WebSocket to ``url``; raise :class:`TransportClosed` when it cannot be opened
    or breaks."""
    try:
        async with trio_websocket.open_websocket_url(
            url,
            message_queue_size=MESSAGE_QUEUE_SIZE,
            max_message_size=MAX_MESSAGE_SIZE,
            receive_buffer_size=RECEIVE_BUFFER_SIZE,
            connect_timeout=connect_timeout,
            disconnect_timeout=2.0,
        ) as ws:
            yield Connection(ws)
    except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
        # trio-websocket reports a refused or timed-out connect as a bare HandshakeError
        # whose cause says what happened.
        raise TransportClosed(f"{url}: {exc.__cause__ or exc!r}") from exc
