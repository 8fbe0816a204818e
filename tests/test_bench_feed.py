"""The bench feed's looped captures (``bench/feed.py``), through the venues' real codecs.

Every venue of the mix, every stream of it, three passes: each codec reads its
connection's frames as the relay would (REST snapshots answered from the feed's bodies),
and must find no gap, resync, checksum failure or bad frame, and no stale delta after the
first pass (Binance's diffs older than the REST snapshot are dropped in pass 0), and every
market-data event of every pass must have a message id of its own (a repeated id would
only be a duplicate hit in JetStream, not a new message).
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlsplit

import pytest

import adapters
from bench.feed import VENUES, Built, build, build_stream
from relay.codec import Codec, Endpoints, FetchSnapshot, Subscription
from relay.events import DataType, VenueStatus
from relay.wire import msg_id

PASSES = 3
BASE = "ws://127.0.0.1:9"
REST = "http://127.0.0.1:9"


def _frames(data: bytearray, ends: list[int]) -> list[str]:
    """The payloads of pre-encoded server frames."""
    out, start = [], 0
    for end in ends:
        length = data[start + 1] & 0x7F
        header = 2 if length < 126 else 4 if length == 126 else 10
        out.append(data[start + header : end].decode())
        start = end
    return out


def feed_codecs(name: str) -> tuple[list[Codec], Built]:
    """The codecs of the feed's venue ``name``, subscribed as the bench's relay is, and what
    :func:`bench.feed.build` makes of it (playbacks by URL path, REST bodies)."""
    venue = VENUES[name]
    adapter = adapters.load(venue.adapter)
    subs = [
        Subscription(native, adapter.canonical_symbol(native) or native, frozenset(types))
        for instruments, data_types in venue.subscriptions
        for native in instruments
        for types in [{DataType(t) for t in data_types}]
    ]
    codecs = adapter.make_codecs(name, subs, Endpoints(BASE + venue.ws_path, REST))
    return codecs, build([name])


@pytest.mark.parametrize("name", list(VENUES))
def test_passes_chain_and_ids_are_new(name: str) -> None:
    codecs, (playbacks, bodies) = feed_codecs(name)
    by_path = {urlsplit(codec.url).path: codec for codec in codecs}
    assert set(by_path) == set(playbacks), "every connection has a stream, and no other"

    ids: Counter[str] = Counter()
    published = 0
    for path, codec in by_path.items():
        playback = playbacks[path]
        frames = len(playback.preamble) + PASSES * len(playback.templates)
        stream = build_stream(playback, frames, 2**31)
        assert stream.loops == PASSES
        first_pass = len(playback.preamble) + len(playback.templates)
        stale_in_first_pass = 0
        codec.connected(0)
        codec.actions()
        for ns, text in enumerate(_frames(stream.data, list(stream.ends)), 1):
            if ns == first_pass + 1:
                stale_in_first_pass = codec.counters.stale_deltas_dropped
            events = list(codec.receive(text, ns))
            for action in codec.actions():
                if isinstance(action, FetchSnapshot):
                    parts = urlsplit(action.url)
                    body = bodies[parts.path, action.key.upper()]
                    events += codec.snapshot_received(action.key, body, ns)
            for event in events:
                if not isinstance(event, VenueStatus):
                    ids[msg_id(event)] += 1
                    published += 1
        counters = codec.counters
        assert counters.parse_errors == 0, path
        assert counters.book_gaps == 0, path
        assert counters.book_resyncs == 0, path
        assert counters.checksum_failures == 0, path
        assert counters.stale_deltas_dropped == stale_in_first_pass, path
    assert published > 0
    assert [i for i, n in ids.items() if n > 1] == []
