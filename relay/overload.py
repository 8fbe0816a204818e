"""The outage buffer: the one place where the pipeline decides what gives under overload.

Place in the nursery tree (see :mod:`relay.app`): it sits between the normalizer, which puts
encoded messages into it (:meth:`OutageBuffer.put`), and the publisher, which gets as many as
its window has room for (:meth:`OutageBuffer.get`). While NATS is away or JetStream is slow,
the publisher's window stays full and messages wait here, up to ``capacity`` bytes of
payload. The venues keep being read meanwhile.

When a message does not fit, the overload policy of its data type decides:

``backpressure``
    :meth:`put` waits for room, and with it the normalizer and then the venue readers.
    Nothing is dropped. Trades, liquidations and status events have no other policy.
``conflate``
    the message waits in a slot of its subject (one venue, symbol and type), where a newer
    one replaces it; each replaced message is dropped as ``conflated``. Slots may take the
    buffer over ``capacity``, by at most one message per subject.
``resync``
    a book delta is dropped as ``overflow``, and so is every later delta of that book (as
    ``resync``) until a snapshot of it comes: a consumer never sees a delta whose
    predecessor is missing. ``on_resync`` asks the venue for that fresh snapshot at once.
    Snapshots are always taken in, over ``capacity`` if need be, and deltas are measured
    against ``capacity`` without the waiting snapshots, so that the deltas following a
    snapshot are not lost to it. A snapshot that comes while the buffer is over ``capacity``
    and an older one of its book still waits supersedes that one and everything of its book
    queued after it (dropped as ``superseded``): at most one snapshot per book waits beyond
    ``capacity``.

Messages leave in the order they came, a conflated one at the place of the first message
its slot took in. Every drop is counted in ``relay_dropped_messages{type, reason}``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import trio

from relay.metrics import Metrics
from relay.wire import OutMessage, symbol_from_token

__all__ = ["OutageBuffer", "count_dropped"]

BACKPRESSURE: Final = "backpressure"
CONFLATE: Final = "conflate"
RESYNC: Final = "resync"
_SNAPSHOT_ID_MARK: Final = ":l2s:"
"""Book snapshots and deltas share a subject; their message ids tell them apart."""


class OutageBuffer:
    """A byte-bounded FIFO of :class:`~relay.wire.OutMessage` with a policy per data type.

    ``policy`` maps a data type (the last subject token; ``status`` for ``_status``) to
    one of ``backpressure``, ``conflate`` or ``resync``; a type it does not name gets
    ``backpressure``. ``on_resync(venue, symbol, reason)`` is called (synchronously, from
    :meth:`put`) for a book that lost a delta.
    """

    def __init__(
        self,
        capacity: int,
        policy: Mapping[str, str],
        metrics: Metrics,
        on_resync: Callable[[str, str, str], None],
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1 byte")
        self._capacity = capacity
        self._policy = dict(policy)
        self._metrics = metrics
        self._on_resync = on_resync
        # A queued item is an OutMessage, or the subject (a str) of a conflation slot whose
        # message is in _slots.
        self._queue: deque[OutMessage | str] = deque()
        self._slots: dict[str, OutMessage] = {}
        self._resyncing: set[str] = set()
        self._snapshots_waiting: dict[str, int] = {}
        self._snapshot_bytes = 0
        self._bytes = 0
        self._closed = False
        self._room = trio.Event()
        self._ready = trio.Event()
        self._policy_of: dict[str, str] = {}
        # Read when Prometheus scrapes, not set on every put and get.
        metrics.outage_buffer_bytes.set_function(lambda: self._bytes)
        metrics.channel_depth.labels("outage_buffer").set_function(lambda: len(self._queue))

    # ------------------------------------------------------------------ read-only state

    @property
    def bytes(self) -> int:
        """Payload bytes waiting."""
        return self._bytes

    def __len__(self) -> int:
        """Messages waiting."""
        return len(self._queue)

    # ------------------------------------------------------------------ producer side

    async def put(self, messages: list[OutMessage]) -> None:
        """Take ``messages`` in, in order, by their types' policies; waits only for room for
        a ``backpressure`` message. On cancellation, what was not taken in yet is counted as
        dropped (``shutdown``)."""
        if self._closed:
            raise trio.ClosedResourceError("the outage buffer is closed")
        i = 0
        try:
            for i, m in enumerate(messages):  # noqa: B007 (i is read after a cancellation)
                policy = self._policy_of.get(m.subject)
                if policy is None:
                    policy = self._policy_of[m.subject] = self._policy.get(
                        _data_type(m.subject), BACKPRESSURE
                    )
                if policy == BACKPRESSURE:
                    while self._bytes and self._bytes + len(m.payload) > self._capacity:
                        self._room = trio.Event()
                        await self._room.wait()
                    self._append(m)
                elif policy == CONFLATE:
                    self._conflate(m)
                else:
                    self._book(m)
        except trio.Cancelled:
            self._drop_many(messages[i:], "shutdown")
            raise

    def close(self) -> None:
        """No more :meth:`put`; :meth:`get` raises ``EndOfChannel`` once the buffer is empty."""
        self._closed = True
        self._ready.set()

    def _append(self, m: OutMessage) -> None:
        self._queue.append(m)
        self._bytes += len(m.payload)
        self._ready.set()

    def _conflate(self, m: OutMessage) -> None:
        subject = m.subject
        waiting = self._slots.get(subject)
        if waiting is not None:
            self._slots[subject] = m
            self._bytes += len(m.payload) - len(waiting.payload)
            self._drop_many([waiting], "conflated")
        elif self._bytes + len(m.payload) <= self._capacity:
            self._append(m)
        else:
            self._slots[subject] = m
            self._queue.append(subject)
            self._bytes += len(m.payload)
            self._ready.set()

    def _book(self, m: OutMessage) -> None:
        subject = m.subject
        if _SNAPSHOT_ID_MARK in m.msg_id:
            self._resyncing.discard(subject)
            if self._bytes > self._capacity and self._snapshots_waiting.get(subject):
                self._supersede(subject)
            self._snapshots_waiting[subject] = self._snapshots_waiting.get(subject, 0) + 1
            self._snapshot_bytes += len(m.payload)
            self._append(m)
        elif subject in self._resyncing:
            self._drop_many([m], RESYNC)
        elif self._bytes - self._snapshot_bytes + len(m.payload) <= self._capacity:
            self._append(m)
        else:
            self._resyncing.add(subject)
            self._drop_many([m], "overflow")
            _, venue, token, _ = subject.split(".", 3)
            self._on_resync(venue, symbol_from_token(token), "outage buffer full")

    def _supersede(self, subject: str) -> None:
        """Drop every queued message of this book: a newer snapshot replaces them all.

        A sweep of the whole queue, but only when the buffer is full and a second snapshot
        of a book comes before the first went out, which the venues' REST limits and
        resubscribe rates keep rare.
        """
        kept: deque[OutMessage | str] = deque()
        gone: list[OutMessage] = []
        for item in self._queue:
            if type(item) is not str and item.subject == subject:
                gone.append(item)
            else:
                kept.append(item)
        self._queue.clear()  # in place: get() may hold a reference while it waits
        self._queue.extend(kept)
        self._bytes -= sum(len(m.payload) for m in gone)
        self._snapshot_bytes -= sum(len(m.payload) for m in gone if _SNAPSHOT_ID_MARK in m.msg_id)
        del self._snapshots_waiting[subject]
        self._drop_many(gone, "superseded")

    # ------------------------------------------------------------------ consumer side

    async def get(self, max_messages: int) -> list[OutMessage]:
        """Up to ``max_messages`` messages, oldest first; waits for at least one. Raises
        ``trio.EndOfChannel`` once closed and empty."""
        queue = self._queue
        while not queue:
            if self._closed:
                raise trio.EndOfChannel
            self._ready = trio.Event()
            await self._ready.wait()
        n = min(max_messages, len(queue))
        taken: list[OutMessage] = []
        slots = self._slots
        size = 0
        waiting = self._snapshots_waiting
        for _ in range(n):
            item = queue.popleft()
            if type(item) is str:
                item = slots.pop(item)
            elif waiting and _SNAPSHOT_ID_MARK in item.msg_id:
                # Emptied as snapshots leave, so that this test runs only while one waits.
                if waiting[item.subject] == 1:
                    del waiting[item.subject]
                else:
                    waiting[item.subject] -= 1
                self._snapshot_bytes -= len(item.payload)
            size += len(item.payload)
            taken.append(item)
        self._bytes -= size
        self._room.set()
        return taken

    def take_all(self) -> list[OutMessage]:
        """Empty the buffer without waiting: what is left when the publisher stops."""
        taken = [self._slots.pop(i) if type(i) is str else i for i in self._queue]
        self._queue.clear()
        self._snapshots_waiting.clear()
        self._snapshot_bytes = 0
        self._bytes = 0
        self._room.set()
        return taken

    # ------------------------------------------------------------------ accounting

    def _drop_many(self, messages: list[OutMessage], reason: str) -> None:
        count_dropped(self._metrics, messages, reason)


def count_dropped(metrics: Metrics, messages: Iterable[OutMessage], reason: str) -> dict[str, int]:
    """Count ``messages`` in ``relay_dropped_messages{type, reason}``; return the counts by
    type. The one place a drop is counted, here and in the publisher."""
    by_type: dict[str, int] = {}
    for m in messages:
        t = _data_type(m.subject)
        by_type[t] = by_type.get(t, 0) + 1
    for t, n in by_type.items():
        metrics.dropped.labels(t, reason).inc(n)
    return by_type


def _data_type(subject: str) -> str:
    """The data type of a subject (its last token), ``status`` for ``_status``."""
    last = subject.rpartition(".")[2]
    return "status" if last == "_status" else last
