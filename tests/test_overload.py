"""The outage buffer and its overload policies, on their own (the publisher's tests and the
fault-injection suite drive it against a real nats-server)."""

from __future__ import annotations

import pytest
import trio

from relay.metrics import Metrics
from relay.overload import OutageBuffer
from relay.wire import OutMessage

POLICY = {
    "trade": "backpressure",
    "status": "backpressure",
    "l2_orderbook": "resync",
    "ticker": "conflate",
}


def msg(kind: str, n: int, *, symbol: str = "btc-usdt", size: int = 10) -> OutMessage:
    """A message of ``size`` payload bytes; book deltas and snapshots differ by id."""
    subject = f"market.bin.{symbol}.{kind}"
    tag = {"l2_orderbook": "l2d", "snapshot": "l2s"}.get(kind, kind)
    if kind == "snapshot":
        subject = f"market.bin.{symbol}.l2_orderbook"
    return OutMessage(subject, f"bin:{symbol}:{tag}:{n}", b"x" * size, n)


class Resyncs:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    def __call__(self, venue: str, symbol: str, reason: str) -> None:
        self.asked.append((venue, symbol, reason))


def make(capacity: int) -> tuple[OutageBuffer, Metrics, Resyncs]:
    metrics = Metrics()
    resyncs = Resyncs()
    return OutageBuffer(capacity, POLICY, metrics, resyncs), metrics, resyncs


def dropped(metrics: Metrics, kind: str, reason: str) -> float:
    labels = {"type": kind, "reason": reason}
    return metrics.registry.get_sample_value("relay_dropped_messages_total", labels) or 0.0


def ids(messages: list[OutMessage]) -> list[str]:
    return [m.msg_id for m in messages]


async def test_messages_leave_in_order_and_bytes_are_counted() -> None:
    buffer, metrics, _ = make(1000)
    batch = [msg("trade", 1), msg("ticker", 2), msg("l2_orderbook", 3), msg("trade", 4)]
    await buffer.put(batch)
    assert len(buffer) == 4 and buffer.bytes == 40
    assert metrics.registry.get_sample_value("relay_outage_buffer_bytes") == 40
    assert await buffer.get(3) == batch[:3]
    assert await buffer.get(10) == batch[3:]
    assert buffer.bytes == 0 and len(buffer) == 0


async def test_a_trade_waits_for_room_and_is_never_dropped() -> None:
    buffer, metrics, _ = make(30)
    await buffer.put([msg("trade", i) for i in range(3)])
    done = trio.Event()

    async def producer() -> None:
        await buffer.put([msg("trade", 3), msg("trade", 4)])
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.sleep(0.05)
        assert not done.is_set() and len(buffer) == 3  # full: the producer waits
        assert ids(await buffer.get(1)) == ["bin:btc-usdt:trade:0"]
        await trio.sleep(0.05)
        assert not done.is_set() and len(buffer) == 3  # room for one of the two
        await buffer.get(2)
        await done.wait()
    assert ids(await buffer.get(10)) == ["bin:btc-usdt:trade:3", "bin:btc-usdt:trade:4"]
    assert dropped(metrics, "trade", "conflated") == 0


async def test_an_empty_buffer_takes_a_message_larger_than_its_capacity() -> None:
    buffer, _, _ = make(5)
    with trio.fail_after(1):
        await buffer.put([msg("trade", 1, size=50)])
    assert buffer.bytes == 50


async def test_tickers_are_conflated_to_the_latest_per_symbol_only_when_full() -> None:
    buffer, metrics, _ = make(30)
    # Room: nothing is conflated, two tickers of one symbol both wait.
    await buffer.put([msg("ticker", 1), msg("ticker", 2)])
    # Full from here: one slot per symbol, each newer ticker replacing the one waiting.
    await buffer.put([msg("trade", 3)])
    with trio.fail_after(1):  # never waits
        await buffer.put([msg("ticker", n) for n in range(10, 20)])
        await buffer.put([msg("ticker", n, symbol="eth-usdt") for n in range(20, 25)])
    assert dropped(metrics, "ticker", "conflated") == 9 + 4
    assert buffer.bytes == 50  # over capacity by one message per conflated symbol
    assert ids(await buffer.get(10)) == [
        "bin:btc-usdt:ticker:1",
        "bin:btc-usdt:ticker:2",
        "bin:btc-usdt:trade:3",
        "bin:btc-usdt:ticker:19",
        "bin:eth-usdt:ticker:24",
    ]
    assert buffer.bytes == 0


async def test_a_book_delta_that_does_not_fit_resyncs_that_book() -> None:
    buffer, metrics, resyncs = make(30)
    await buffer.put([msg("snapshot", 1), msg("l2_orderbook", 2), msg("trade", 3)])
    with trio.fail_after(1):  # never waits
        # The first fits (the waiting snapshot does not count for deltas), the next not.
        await buffer.put([msg("l2_orderbook", 4), msg("l2_orderbook", 5), msg("l2_orderbook", 6)])
    assert dropped(metrics, "l2_orderbook", "overflow") == 1
    assert dropped(metrics, "l2_orderbook", "resync") == 1
    assert resyncs.asked == [("bin", "BTC-USDT", "outage buffer full")]
    await buffer.get(10)
    # Room again, but deltas of that book stay out until its snapshot: no delta whose
    # predecessor is missing ever goes out.
    await buffer.put([msg("l2_orderbook", 7), msg("snapshot", 8), msg("l2_orderbook", 9)])
    assert dropped(metrics, "l2_orderbook", "resync") == 2
    assert ids(await buffer.get(10)) == ["bin:btc-usdt:l2s:8", "bin:btc-usdt:l2d:9"]
    assert len(resyncs.asked) == 1


async def test_a_snapshot_is_taken_in_over_capacity() -> None:
    buffer, _, resyncs = make(10)
    await buffer.put([msg("trade", 1)])
    with trio.fail_after(1):
        await buffer.put([msg("snapshot", 2, size=100)])
    assert buffer.bytes == 110 and resyncs.asked == []


async def test_a_type_without_a_policy_waits_for_room() -> None:
    buffer, metrics, _ = make(10)
    await buffer.put([msg("funding_rate", 1)])
    with trio.move_on_after(0.1) as scope:
        await buffer.put([msg("funding_rate", 2)])
    assert scope.cancelled_caught
    # Cancelled while waiting: counted, not lost silently.
    assert dropped(metrics, "funding_rate", "shutdown") == 1


async def test_close_ends_the_consumer_once_drained() -> None:
    buffer, _, _ = make(100)
    await buffer.put([msg("trade", 1)])
    buffer.close()
    assert ids(await buffer.get(10)) == ["bin:btc-usdt:trade:1"]
    with pytest.raises(trio.EndOfChannel):
        await buffer.get(10)
    with pytest.raises(trio.ClosedResourceError):
        await buffer.put([msg("trade", 2)])


async def test_a_waiting_consumer_wakes_on_close_and_on_put() -> None:
    buffer, _, _ = make(100)
    got: list[OutMessage] = []

    async def consumer() -> None:
        got.extend(await buffer.get(10))
        with pytest.raises(trio.EndOfChannel):
            await buffer.get(10)

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.sleep(0.01)
            await buffer.put([msg("trade", 1)])
            await trio.sleep(0.01)
            buffer.close()
    assert ids(got) == ["bin:btc-usdt:trade:1"]


async def test_take_all_empties_it_slots_included() -> None:
    buffer, _, _ = make(10)
    await buffer.put([msg("trade", 1), msg("ticker", 2), msg("ticker", 3)])
    assert ids(buffer.take_all()) == ["bin:btc-usdt:trade:1", "bin:btc-usdt:ticker:3"]
    assert buffer.bytes == 0 and len(buffer) == 0


async def test_a_newer_snapshot_supersedes_a_waiting_one_and_what_followed_it() -> None:
    buffer, metrics, resyncs = make(30)
    other = msg("l2_orderbook", 2, symbol="eth-usdt")
    await buffer.put([msg("trade", 1), other, msg("snapshot", 3, size=100)])
    # Deltas are measured without the waiting snapshot: this one fits.
    await buffer.put([msg("l2_orderbook", 4)])
    assert buffer.bytes == 130
    # Now it is full: this delta overflows, and the resync's snapshot comes while the first
    # still waits. The first and the delta behind it are superseded.
    await buffer.put([msg("l2_orderbook", 5), msg("snapshot", 6, size=100)])
    assert dropped(metrics, "l2_orderbook", "overflow") == 1
    assert dropped(metrics, "l2_orderbook", "superseded") == 2
    assert len(resyncs.asked) == 1
    assert buffer.bytes == 10 + 10 + 100
    await buffer.put([msg("l2_orderbook", 7)])  # after the newer snapshot: kept
    assert ids(await buffer.get(10)) == [
        "bin:btc-usdt:trade:1",
        "bin:eth-usdt:l2d:2",
        "bin:btc-usdt:l2s:6",
        "bin:btc-usdt:l2d:7",
    ]
    # Gone out: the next snapshot of that book supersedes nothing.
    await buffer.put([msg("snapshot", 8)])
    assert dropped(metrics, "l2_orderbook", "superseded") == 2
    assert buffer.bytes == 10


async def test_with_room_every_snapshot_goes_out() -> None:
    # Hyperliquid sends nothing but snapshots: two in a row are two events, not one.
    buffer, metrics, _ = make(1000)
    await buffer.put([msg("snapshot", 1), msg("snapshot", 2), msg("l2_orderbook", 3)])
    assert ids(await buffer.get(10)) == [
        "bin:btc-usdt:l2s:1",
        "bin:btc-usdt:l2s:2",
        "bin:btc-usdt:l2d:3",
    ]
    assert dropped(metrics, "l2_orderbook", "superseded") == 0
