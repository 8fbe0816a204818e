"""The JetStream publisher against a real nats-server (never a mock): provisioning, storage
exactly once, no-stream subjects, the window, NATS going away and coming back (or not),
shutdown and cancellation. Its input is a real :class:`~relay.overload.OutageBuffer`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import pytest
import trio
from nats.js.api import (
    ConsumerConfig,
    ConsumerInfo,
    DiscardPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

import relay.publisher
from relay.metrics import Metrics
from relay.natsd import NatsServer, free_port, responding
from relay.overload import OutageBuffer
from relay.publisher import ProvisioningError, Publisher, PublisherError
from relay.wire import OutMessage
from tests.jetstream import stream_counts

STREAM = StreamConfig(name="MARKET", subjects=["market.binance.>"], storage=StorageType.FILE)


def make_msgs(
    n: int, *, venue: str = "binance", symbol: str = "btc-usdt", kind: str = "trade", start: int = 0
) -> list[OutMessage]:
    subject = f"market.{venue}.{symbol}.{kind}"
    now = time.time_ns()
    return [
        OutMessage(subject, f"{venue}:{symbol}:{kind}:{i}", b'{"i":%d}' % i, now)
        for i in range(start, start + n)
    ]


def batched(msgs: list[OutMessage], size: int) -> list[list[OutMessage]]:
    return [msgs[i : i + size] for i in range(0, len(msgs), size)]


def make_publisher(
    url: str,
    metrics: Metrics,
    *,
    streams: list[StreamConfig] | None = None,
    consumers: list[tuple[str, ConsumerConfig]] | None = None,
    connect: dict[str, Any] | None = None,
    window: int = 1000,
    ack_timeout: float = 2.0,
    retry_schedule: tuple[float, ...] = (0.1, 0.5),
    shutdown_timeout: float = 5.0,
) -> Publisher:
    return Publisher(
        {"servers": [url], "reconnect_time_wait": 0.1, **(connect or {})},
        [STREAM] if streams is None else streams,
        consumers or [],
        window=window,
        ack_timeout=ack_timeout,
        retry_schedule=retry_schedule,
        metrics=metrics,
        shutdown_timeout=shutdown_timeout,
    )


def make_buffer(metrics: Metrics, capacity: int = 1 << 20) -> OutageBuffer:
    """An outage buffer whose every type waits for room (no drops of its own)."""

    def no_resync(venue: str, symbol: str, reason: str) -> None:
        raise AssertionError("a backpressure-only buffer never asks for a resync")

    return OutageBuffer(capacity, {}, metrics, no_resync)


async def publish(
    pub: Publisher,
    batches: list[list[OutMessage]],
    *,
    between: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    """Run ``pub`` over ``batches`` until it returns; ``between(i)`` runs before batch i."""
    source = make_buffer(pub._metrics, capacity=4096)
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run, source)
        try:
            for i, batch in enumerate(batches):
                if between is not None:
                    await between(i)
                await source.put(batch)
        finally:
            source.close()


async def provision(pub: Publisher) -> None:
    """Run ``pub`` with no input: it connects, provisions and returns (or raises)."""
    source = make_buffer(pub._metrics)
    source.close()
    await pub.run(source)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def acked(metrics: Metrics, n: int) -> None:
    """Wait until ``n`` messages have been acknowledged as stored."""
    with trio.fail_after(5):
        while value(metrics, "relay_published_messages_total", venue="binance") < n:
            await trio.sleep(0.01)


def dropped(metrics: Metrics, kind: str, reason: str) -> float:
    return value(metrics, "relay_dropped_messages_total", type=kind, reason=reason)


def settled(metrics: Metrics) -> float:
    """Messages settled any way: stored, duplicate or dropped."""
    total = value(metrics, "relay_published_messages_total", venue="binance")
    total += value(metrics, "relay_published_duplicates_total", venue="binance")
    for family in metrics.registry.collect():
        if family.name == "relay_dropped_messages":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def js_query(url: str, query: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``query(js)`` with a separate nats-py client, on asyncio in a worker thread."""

    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await query(nc.jetstream())
        finally:
            await nc.close()

    return await trio.to_thread.run_sync(asyncio.run, main())


async def stream_info(url: str, name: str) -> StreamInfo:
    return await js_query(url, lambda js: js.stream_info(name))


async def consumer_info(url: str, stream: str, name: str) -> ConsumerInfo:
    return await js_query(url, lambda js: js.consumer_info(stream, name))


async def stored(url: str) -> int:
    return (await stream_counts(url, ["MARKET"]))["MARKET"]


# ---------------------------------------------------------------------------- provisioning


async def test_provisioning_is_idempotent_and_updates_a_changed_stream(
    nats_server: NatsServer,
) -> None:
    url = nats_server.url
    consumer = ("MARKET", ConsumerConfig(durable_name="archiver", ack_wait=30.0))
    day = StreamConfig(name="MARKET", subjects=["market.binance.>"], max_age=86400.0)
    for _ in range(2):  # the second start finds everything as configured
        pub = make_publisher(url, Metrics(), streams=[day], consumers=[consumer])
        await provision(pub)
        assert pub.provisioned
    assert (await stream_info(url, "MARKET")).config.max_age == 86400.0
    assert (await consumer_info(url, "MARKET", "archiver")).config.ack_wait == 30.0

    week = StreamConfig(name="MARKET", subjects=["market.binance.>"], max_age=7 * 86400.0)
    longer_wait = ("MARKET", ConsumerConfig(durable_name="archiver", ack_wait=60.0))
    await provision(make_publisher(url, Metrics(), streams=[week], consumers=[longer_wait]))
    assert (await stream_info(url, "MARKET")).config.max_age == 7 * 86400.0
    assert (await consumer_info(url, "MARKET", "archiver")).config.ack_wait == 60.0


async def test_a_stream_config_the_server_rejects_raises_with_its_message(
    nats_server: NatsServer,
) -> None:
    await provision(make_publisher(nats_server.url, Metrics()))  # a file stream
    in_memory = StreamConfig(
        name="MARKET", subjects=["market.binance.>"], storage=StorageType.MEMORY
    )
    pub = make_publisher(nats_server.url, Metrics(), streams=[in_memory])
    with pytest.raises(ProvisioningError, match="can not change storage type"):
        await provision(pub)
    assert not pub.provisioned
    assert not any(t.name == "relay-publisher" for t in threading.enumerate())


async def test_with_no_server_run_keeps_trying_and_can_be_cancelled() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    pub = make_publisher(url, Metrics())  # reconnects forever by default
    with trio.move_on_after(0.5) as waited:
        await provision(pub)
    assert waited.cancelled_caught
    assert not pub.connected and not pub.provisioned
    assert pub.last_error is not None and "Connect call failed" in pub.last_error
    assert not any(t.name == "relay-publisher" for t in threading.enumerate())

    bounded = make_publisher(url, Metrics(), connect={"max_reconnect_attempts": 1})
    with trio.fail_after(5), pytest.raises(PublisherError, match="could not connect"):
        await provision(bounded)


def test_nats_server_restarts_on_the_same_url(nats_server: NatsServer) -> None:
    url = nats_server.url
    assert responding(url)
    nats_server.stop()
    assert not responding(url)
    nats_server.start()
    assert nats_server.url == url and responding(url)


# ---------------------------------------------------------------------------- publishing


async def test_every_message_is_stored_once_and_a_republish_is_a_duplicate(
    nats_server: NatsServer,
) -> None:
    msgs = make_msgs(5000)
    metrics = Metrics()
    pub = make_publisher(nats_server.url, metrics)
    await publish(pub, batched(msgs, 250))
    assert await stored(nats_server.url) == 5000
    assert value(metrics, "relay_published_messages_total", venue="binance") == 5000
    assert value(metrics, "relay_puback_latency_seconds_count") == 5000
    assert value(metrics, "relay_publish_in_flight") == 0
    assert pub.in_flight == 0 and pub.backlog == 0

    again = Metrics()
    await publish(make_publisher(nats_server.url, again), batched(msgs, 500))
    assert await stored(nats_server.url) == 5000
    assert value(again, "relay_published_duplicates_total", venue="binance") == 5000
    assert value(again, "relay_published_messages_total", venue="binance") == 0


async def test_a_subject_no_stream_captures_is_dropped_and_logged_once(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def error(self, event: str, **kw: Any) -> None:
            logged.append((event, kw))

        info = warning = error

    monkeypatch.setattr(relay.publisher, "log", Recorder())
    good = make_msgs(1000)
    # A venue status subject has no symbol token: market.<venue>._status.
    status = [
        m._replace(subject="market.kraken._status")
        for m in make_msgs(50, venue="kraken", symbol="x", kind="status")
    ]
    orphans = [
        *make_msgs(100, venue="kraken", symbol="xbt-usd"),
        *make_msgs(100, venue="kraken", symbol="eth-usd"),
        *status,
    ]
    mixed = [m for pair in zip(good, orphans, strict=False) for m in pair] + good[len(orphans) :]
    metrics = Metrics()
    with trio.fail_after(8):
        await publish(make_publisher(nats_server.url, metrics), batched(mixed, 100))
    assert await stored(nats_server.url) == 1000
    assert value(metrics, "relay_published_messages_total", venue="binance") == 1000
    assert dropped(metrics, "trade", "no_stream") == 200
    assert dropped(metrics, "status", "no_stream") == 50
    assert value(metrics, "relay_publish_errors_total", reason="no_stream") == 250
    assert value(metrics, "relay_publish_retries_total") == 0
    no_stream_logs = [kw["subject"] for event, kw in logged if "no JetStream stream" in event]
    assert sorted(no_stream_logs) == [
        "market.kraken._status",
        "market.kraken.eth-usd.trade",
        "market.kraken.xbt-usd.trade",
    ]


async def test_messages_jetstream_or_nats_refuse_are_dropped(nats_server: NatsServer) -> None:
    small = StreamConfig(name="MARKET", subjects=["market.binance.>"], max_msg_size=1000)
    good = make_msgs(100)
    too_big_for_stream = [m._replace(payload=b"x" * 2000) for m in make_msgs(3, start=100)]
    too_big_for_nats = [m._replace(payload=b"x" * 2_000_000) for m in make_msgs(2, start=200)]
    metrics = Metrics()
    batches = [good[:50], too_big_for_stream, too_big_for_nats, good[50:]]
    with trio.fail_after(8):
        await publish(make_publisher(nats_server.url, metrics, streams=[small]), batches)
    assert await stored(nats_server.url) == 100
    assert dropped(metrics, "trade", "rejected") == 3
    assert dropped(metrics, "trade", "invalid") == 2
    assert settled(metrics) == 105


async def test_server_errors_are_retried_until_run_ends(nats_server: NatsServer) -> None:
    # A full stream that discards new messages answers 503 "maximum messages exceeded".
    full = StreamConfig(
        name="MARKET", subjects=["market.binance.>"], max_msgs=10, discard=DiscardPolicy.NEW
    )
    metrics = Metrics()
    pub = make_publisher(
        nats_server.url,
        metrics,
        streams=[full],
        retry_schedule=(0.05, 0.1),
        shutdown_timeout=1.0,
    )
    with trio.fail_after(5):
        await publish(pub, [make_msgs(15)])
    assert await stored(nats_server.url) == 10
    # Never given up for a server error: retried (the last delay again and again) for the
    # whole second of the shutdown timeout, then counted as dropped at shutdown.
    assert dropped(metrics, "trade", "shutdown") == 5
    retries = value(metrics, "relay_publish_retries_total")
    print(f"5 messages retried {retries:.0f} times in 1 s")
    assert retries >= 5 * 5
    assert value(metrics, "relay_publish_errors_total", reason="nack") >= retries
    assert pub.last_error is not None and "maximum messages exceeded" in pub.last_error


async def test_the_window_bounds_messages_in_flight(nats_server: NatsServer) -> None:
    metrics = Metrics()
    pub = make_publisher(nats_server.url, metrics, window=64)
    seen: list[int] = []
    done = trio.Event()

    async def sample() -> None:
        while not done.is_set():
            seen.append(pub.in_flight)
            assert value(metrics, "relay_publish_in_flight") <= 64
            assert pub.backlog >= pub.in_flight
            # Not sleep(0): a busy trio thread would starve the publisher's thread of the GIL.
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        await publish(pub, batched(make_msgs(3000), 300))  # batches larger than the window
        done.set()
    assert await stored(nats_server.url) == 3000
    assert 0 < max(seen) <= 64


async def test_a_full_window_leaves_the_rest_in_the_outage_buffer(
    nats_server: NatsServer,
) -> None:
    metrics = Metrics()
    pub = make_publisher(nats_server.url, metrics, window=64, ack_timeout=5.0)
    payload = 16
    msgs = [m._replace(payload=b"x" * payload) for m in make_msgs(400)]
    source = make_buffer(metrics, capacity=100 * payload)
    handed_over = 0
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run, source)
            nats_server.kill()  # nothing is acknowledged from now on

            async def sender() -> None:
                nonlocal handed_over
                for batch in batched(msgs, 100):
                    handed_over += len(batch)
                    await source.put(batch)

            nursery.start_soon(sender)
            await trio.sleep(0.3)
            # 64 published, 100 payloads' worth waiting in the buffer, the sender blocked on
            # the rest: backpressure.
            assert pub.in_flight == 64
            assert len(source) == 100 and source.bytes == 100 * payload
            assert pub.backlog == 164
            assert handed_over == 200
            assert value(metrics, "relay_publish_in_flight") == 64
            assert value(metrics, "relay_outage_buffer_bytes") == 100 * payload
            nursery.cancel_scope.cancel()
    # In flight, in the buffer, and the rest of the batch the sender was blocked on.
    assert dropped(metrics, "trade", "shutdown") == 200


# ---------------------------------------------------------------------------- NATS going away


async def test_messages_sent_while_nats_is_down_are_retried_and_stored_exactly_once(
    nats_server: NatsServer,
) -> None:
    msgs = make_msgs(2000)
    metrics = Metrics()
    pub = make_publisher(
        nats_server.url,
        metrics,
        ack_timeout=0.5,
        retry_schedule=(0.2, 0.5, 1.0, 2.0),
    )

    async def between(i: int) -> None:
        if i == 10:  # half published: wait for their PubAcks, then kill the server
            await acked(metrics, 1000)
            nats_server.kill()
            with trio.fail_after(5):
                while pub.connected:
                    await trio.sleep(0.01)
        if i == 19:  # the rest sent into the void; bring the server back
            await trio.sleep(0.7)
            await trio.to_thread.run_sync(nats_server.start)

    with trio.fail_after(9):
        await publish(pub, batched(msgs, 100), between=between)
    assert await stored(nats_server.url) == len({m.msg_id for m in msgs}) == 2000
    assert settled(metrics) == 2000
    assert dropped(metrics, "trade", "shutdown") == 0
    assert value(metrics, "relay_published_messages_total", venue="binance") >= 1000


async def test_an_outage_longer_than_the_retry_schedule_loses_nothing(
    nats_server: NatsServer,
) -> None:
    msgs = make_msgs(3000)
    metrics = Metrics()
    pub = make_publisher(
        nats_server.url,
        metrics,
        # A small reconnect buffer, so that some attempts cannot even be buffered.
        connect={"pending_size": 8192},
        ack_timeout=0.3,
        retry_schedule=(0.1, 0.2),
    )
    restarted = trio.Event()

    async def restart_later() -> None:
        # Ten times the whole retry schedule (0.3 s + 0.1 + 0.3 + 0.2 + 0.3).
        await trio.sleep(3.0)
        await trio.to_thread.run_sync(nats_server.start)
        restarted.set()

    async with trio.open_nursery() as nursery:

        async def between(i: int) -> None:
            if i == 5:
                await acked(metrics, 500)
                nats_server.kill()
                nursery.start_soon(restart_later)

        with trio.fail_after(15):
            # The window and then the outage buffer fill up; then the input waits.
            await publish(pub, batched(msgs, 100), between=between)
    assert restarted.is_set()
    assert await stored(nats_server.url) == 3000
    assert value(metrics, "relay_published_messages_total", venue="binance") == 3000
    assert settled(metrics) == 3000  # nothing dropped
    assert value(metrics, "relay_publish_errors_total", reason="buffer_full") > 0


async def test_run_returns_after_shutdown_timeout_with_acks_outstanding(
    nats_server: NatsServer,
) -> None:
    metrics = Metrics()
    pub = make_publisher(
        nats_server.url, metrics, ack_timeout=0.5, retry_schedule=(10.0,), shutdown_timeout=1.0
    )

    async def between(i: int) -> None:
        if i == 0:
            nats_server.kill()

    start = trio.current_time()
    with trio.fail_after(5):
        await publish(pub, batched(make_msgs(300), 100), between=between)
    assert 1.0 <= trio.current_time() - start < 3.0
    assert dropped(metrics, "trade", "shutdown") == 300
    assert pub.in_flight == 0
    assert value(metrics, "relay_publish_in_flight") == 0


async def test_a_connection_closed_for_good_fails_run(nats_server: NatsServer) -> None:
    metrics = Metrics()
    # Reconnecting forever is the default; one attempt makes nats-py give up at once.
    pub = make_publisher(nats_server.url, metrics, connect={"max_reconnect_attempts": 1})
    source = make_buffer(metrics)
    with (
        trio.fail_after(5),
        pytest.RaisesGroup(pytest.RaisesExc(PublisherError, match="closed for good")),
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run, source)
            nats_server.kill()
            await source.put(make_msgs(100))
    assert dropped(metrics, "trade", "nats_closed") == 100
    assert pub.last_error is not None and "closed for good" in pub.last_error
    assert not any(t.name == "relay-publisher" for t in threading.enumerate())


async def test_cancelling_run_closes_the_connection_and_joins_the_thread(
    nats_server: NatsServer,
) -> None:
    metrics = Metrics()
    pub = make_publisher(nats_server.url, metrics, window=100)
    source = make_buffer(metrics)
    # Far more than the publisher stores in the 50 ms it runs (about 40k msgs/s on two
    # cores): some are always left to drop at shutdown, however fast the machine.
    handed_over = 20_000
    for batch in batched(make_msgs(handed_over), 100):
        await source.put(batch)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run, source)
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert not any(t.name == "relay-publisher" for t in threading.enumerate())
    assert not pub.connected
    # Everything is accounted for: acknowledged, or dropped at shutdown, in flight or still
    # in the buffer (some of those in flight were stored anyway, their PubAcks unread).
    assert len(source) == 0
    assert dropped(metrics, "trade", "shutdown") > 0
    assert settled(metrics) == handed_over
    published = value(metrics, "relay_published_messages_total", venue="binance")
    assert published <= await stored(nats_server.url) <= handed_over
