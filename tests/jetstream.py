"""Read what a real JetStream server stored, from trio tests.

nats-py is asyncio-only, so each call runs its own short asyncio loop in a worker thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats
import trio
from nats.js.errors import NotFoundError


@dataclass(frozen=True)
class StoredMessage:
    subject: str
    msg_id: str
    data: bytes
    seq: int


async def stream_counts(url: str, names: list[str]) -> dict[str, int]:
    """Messages held by each stream (0 for a stream that does not exist)."""

    async def query() -> dict[str, int]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            counts = {}
            for name in names:
                try:
                    counts[name] = (await js.stream_info(name)).state.messages
                except NotFoundError:
                    counts[name] = 0
            return counts
        finally:
            await nc.close()

    return await trio.to_thread.run_sync(asyncio.run, query())


async def stream_messages(url: str, stream: str) -> list[StoredMessage]:
    """Every message in ``stream``, in stream order."""

    async def fetch() -> list[StoredMessage]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out: list[StoredMessage] = []
            if info.state.messages == 0:
                return out
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    raw = await js.get_msg(stream, seq)
                except NotFoundError:
                    continue
                headers = raw.headers or {}
                out.append(
                    StoredMessage(raw.subject, headers.get("Nats-Msg-Id", ""), raw.data or b"", seq)
                )
            return out
        finally:
            await nc.close()

    return await trio.to_thread.run_sync(asyncio.run, fetch())
