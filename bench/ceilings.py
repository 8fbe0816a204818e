"""Ceilings: how fast this machine lets each half of the relay go, measured beside the bench.

``just bench --ceilings`` (``bench/bench.py --ceilings``) runs these after the relay's own
runs, with the same feed process and the same kind of nats-server, and reports the
relay's end-to-end figures as shares of them:

**Reading** (``clients``): a bare client that only counts the frames of ``bench/feed.py``'s
Binance spot stream (``--venues binance``) at full speed (``--rate 0``), each in its own
process as the relay is, one per WebSocket stack:

* ``trio-websocket`` (``open_websocket_url``, ``get_message()`` per frame, a message queue
  of :data:`relay.transport.MAX_QUEUE`);
* ``websockets.trio`` (``recv()`` per frame, with the relay transport's options: no
  compression, no keepalive, its ``max_queue`` and ``max_size``), the library the relay's
  transport uses;
* ``relay.transport``: the relay's own read path on top of it (``receive_burst`` of up to
  :data:`relay.venue.BURST_LIMIT` frames).

Frames/s are counted by the client over :data:`SECONDS` after :data:`WARMUP`; if the feed
runs out of frames first (it builds :data:`FEED_MB` MiB of them here), the window ends at
the last frame and ``ran_out`` says so.

**Publishing** (``publisher``): :class:`relay.publisher.Publisher` alone, taking messages
from a :class:`relay.overload.OutageBuffer` as in the relay, into a fresh nats-server with
the bench's streams on file storage, with the relay's configuration (the bench's TOML,
read by :func:`relay.config.load_config`: publish window, ack timeout, retry schedule,
buffer size), in its own process. The messages are the bench's own: the feed's frames
(``bench/feed.py``'s passes with shifted ids) decoded once by the Binance codec and
encoded by :func:`relay.wire.to_message`, as the normalizer does, before anything is
timed. That gives :data:`REAL_PASSES` passes of real messages (trades, tickers and book
deltas: the first pass's snapshots and statuses are left out, as the saturated run has
them only at its start); they are repeated, with
``~<copy>`` appended to the message id so that every copy is new to JetStream (same
subjects and bodies, ids a few bytes longer), up to :data:`MESSAGES`. A feeder task
puts them into the buffer in batches of the pipeline's ``batch_max``; every data type is on
``backpressure`` there, so the feeder waits for room instead of dropping. Messages/s are
PubAck-confirmed stores (``relay_published_messages_total``) over the window.

Each figure also gives the CPU of the measuring process (all threads) and of the feed or
nats-server over the window, to see what limited it, and ``per_cpu_s``: the rate per CPU
second of the measuring process (what it would reach with a core to itself, if CPU were
its limit; on a shared machine the plain rate also carries the waits for a core).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO

import trio

HERE = Path(__file__).resolve().parent
CLIENTS = ("trio-websocket", "websockets.trio", "relay.transport")
WARMUP = 2.0
SECONDS = 5.0
FEED_MB = 512
"""The feed's frame buffer for the client ceilings: 2.7M frames, 13 s at 200k frames/s."""
MESSAGES = 1_500_000
"""Messages the publisher ceiling can send: about 15 s at 100k/s."""
REAL_PASSES = 8
"""Passes of the feed's frames decoded into real messages before copies are made."""
SAMPLE_EVERY = 0.05
IDLE = 3.0
"""No frame for this long after the window started: the feed ran out. (Stalls of a second
happen on a busy machine: JetStream's file store, other processes.)"""
FIRST_TIMEOUT = 30.0
SUBSCRIBE = '{"method":"SUBSCRIBE","params":[],"id":1}'
"""The feed streams after the client's first frame, whatever it says."""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The measuring window (in the child processes)


async def window(
    count: Callable[[], int], warmup: float, seconds: float, total: int | None = None
) -> dict[str, Any]:
    """Wait for the first unit, then ``warmup`` seconds; count over ``seconds`` from there, or
    up to the last unit if the source ran out: ``total`` reached, or nothing for
    :data:`IDLE` seconds. Prints ``window`` on stdout when it starts, so that the parent can
    read the CPU of the other processes then."""
    with trio.fail_after(FIRST_TIMEOUT):
        while count() == 0:
            await trio.sleep(0.01)
    await trio.sleep(warmup)
    print("window", flush=True)
    t0, c0, cpu0 = time.monotonic(), count(), time.process_time()
    last_t, last_c = t0, c0
    ran_out = False
    while True:
        await trio.sleep(SAMPLE_EVERY)
        t, c = time.monotonic(), count()
        if c != last_c:
            last_t, last_c = t, c
        if c == total or t - last_t >= IDLE:
            ran_out = True  # the window ends with the last unit
            break
        if t - t0 >= seconds:
            last_t, last_c = t, c
            break
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    elapsed = last_t - t0
    n = last_c - c0
    return {
        "window_s": round(elapsed, 3),
        "count": n,
        "per_s": round(n / elapsed) if elapsed > 0 else None,
        "cpu_percent": round(100 * cpu / wall) if wall > 0 else None,
        # What one core would give if the process had it to itself (the machine is shared).
        "per_cpu_s": round(n * wall / (elapsed * cpu)) if cpu > 0 and elapsed > 0 else None,
        "ran_out": ran_out,
    }


def finish(result: dict[str, Any]) -> NoReturn:
    """Print the result and leave at once: no closing handshake. (A websockets.trio client
    that stopped reading mid-stream did not get through its close while the feed still
    had frames queued for it; nothing after the window is measured anyway.)"""
    print(json.dumps(result), flush=True)
    os._exit(0)


async def _client(lib: str, url: str, warmup: float, seconds: float) -> None:
    from relay import transport

    counter = [0]

    async def measure(reader: Callable[[], Any]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            finish({"client": lib, **await window(lambda: counter[0], warmup, seconds)})

    if lib == "trio-websocket":
        from trio_websocket import open_websocket_url

        async with open_websocket_url(
            url,
            message_queue_size=transport.MAX_QUEUE,
            max_message_size=transport.MAX_MESSAGE_SIZE,
        ) as tws:
            await tws.send_message(SUBSCRIBE)

            async def read_tws() -> None:
                get = tws.get_message
                while True:
                    await get()
                    counter[0] += 1

            await measure(read_tws)
    elif lib == "websockets.trio":
        from websockets.trio.client import connect

        async with connect(
            url,
            ping_interval=None,
            ping_timeout=None,
            close_timeout=transport.CLOSE_TIMEOUT,
            max_size=transport.MAX_MESSAGE_SIZE,
            max_queue=transport.MAX_QUEUE,
            compression=None,
            proxy=None,
        ) as ws:
            await ws.send(SUBSCRIBE)

            async def read_ws() -> None:
                recv = ws.recv
                while True:
                    await recv()
                    counter[0] += 1

            await measure(read_ws)
    elif lib == "relay.transport":
        from relay.venue import BURST_LIMIT

        async with transport.connect(url) as conn:
            await conn.send(SUBSCRIBE)

            async def read_bursts() -> None:
                receive = conn.receive_burst
                while True:
                    counter[0] += len(await receive(BURST_LIMIT))

            await measure(read_bursts)
    else:
        raise ValueError(f"unknown client {lib!r}")


# ---------------------------------------------------------------------------------------------
# The publisher's messages


def _frame_texts(stream: Any) -> Iterator[str]:
    """The payloads of ``bench/feed.py``'s pre-encoded WebSocket frames, in order."""
    data, start = stream.data, 0
    for end in stream.ends:
        length = data[start + 1] & 0x7F
        header = 2 if length < 126 else 4 if length == 126 else 10
        yield data[start + header : end].decode()
        start = end


def bench_messages(passes: int = REAL_PASSES) -> list[Any]:
    """The relay's messages for ``passes`` passes of the feed's frames: the Binance codec on
    the frames (REST snapshots answered from the capture), then :func:`relay.wire.to_message`
    on every event the normalizer would publish."""
    import feed

    import adapters
    from bench import SYMBOLS
    from relay.captures import load
    from relay.codec import FetchSnapshot, Subscription
    from relay.events import BookSnapshot, DataType, VenueStatus
    from relay.wire import to_message

    recording = load(feed.DEFAULT_CAPTURE)
    playback = feed.build(["binance"])[0][feed.BINANCE_PATH]
    stream = feed.build_stream(playback, len(playback.templates) * passes, 2**31)
    adapter = adapters.load("binance")
    types = frozenset({DataType.TRADE, DataType.TICKER, DataType.L2_ORDERBOOK})
    subs = [Subscription(s, adapter.canonical_symbol(s) or s, types) for s in SYMBOLS]
    [codec] = adapter.make_codecs("binance", subs, adapter.default_endpoints)
    bodies = feed.snapshots(recording)
    ns = time.time_ns()
    codec.connected(ns)
    codec.actions()
    events = []
    for text in _frame_texts(stream):
        events += codec.receive(text, ns)
        for action in codec.actions():
            if isinstance(action, FetchSnapshot):
                events += codec.snapshot_received(action.key, bodies[action.key], ns)
    # The steady state the relay publishes in the saturated run: trades, tickers and book
    # deltas. The first pass's book snapshots (tens of kB each) and book_synced statuses
    # come once per run there; repeated in every copy they would weigh a quarter of the bytes.
    return [to_message(e) for e in events if not isinstance(e, (BookSnapshot, VenueStatus))]


def copies(base: list[Any], total: int) -> list[Any]:
    """``base``, then copies of it with ``~<n>`` appended to each message id, ``total`` in all."""
    out = list(base[:total])
    n = 1
    while len(out) < total:
        suffix = f"~{n}"
        out += [m._replace(msg_id=m.msg_id + suffix) for m in base[: total - len(out)]]
        n += 1
    return out


async def _publish(config_path: Path, warmup: float, seconds: float, total: int) -> None:
    from relay.config import load_config, nats_connect_options
    from relay.metrics import Metrics
    from relay.overload import OutageBuffer
    from relay.publisher import Publisher
    from relay.streams import consumer_configs, stream_configs

    config = load_config(config_path)
    base = bench_messages()
    messages = copies(base, total)
    _say(f"ceilings: {len(base)} messages from the feed's frames, {len(messages)} with copies")
    nats_cfg, pipeline = config.nats, config.pipeline
    metrics = Metrics()
    publisher = Publisher(
        nats_connect_options(nats_cfg),
        stream_configs(nats_cfg.streams),
        consumer_configs(nats_cfg.consumers),
        window=nats_cfg.publish_window,
        ack_timeout=nats_cfg.ack_timeout_ms / 1000,
        retry_schedule=[ms / 1000 for ms in nats_cfg.retry_schedule_ms],
        metrics=metrics,
        shutdown_timeout=config.service.shutdown_timeout_ms / 1000,
    )
    buffer = OutageBuffer(pipeline.outage_buffer_bytes, {}, metrics, lambda *_: None)
    batch = pipeline.batch_max
    venues = sorted({m.subject.split(".")[1] for m in base})

    def stored() -> int:
        get = metrics.registry.get_sample_value
        return int(
            sum(
                (get("relay_published_messages_total", {"venue": v}) or 0)
                + (get("relay_published_duplicates_total", {"venue": v}) or 0)
                for v in venues
            )
        )

    async def feed_buffer() -> None:
        for i in range(0, len(messages), batch):
            await buffer.put(messages[i : i + batch])

    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run, buffer)
        nursery.start_soon(feed_buffer)
        result = await window(stored, warmup, seconds, len(messages))
        retries = metrics.registry.get_sample_value("relay_publish_retries_total") or 0
        finish(
            {
                "messages_built": len(messages),
                "real_messages": len(base),
                "publish_window": nats_cfg.publish_window,
                "publish_retries": int(retries),
                **result,
            }
        )


# ---------------------------------------------------------------------------------------------
# The parent's side (called by bench.py)


def _cpu(pid: int | None) -> float:
    from bench import cpu_seconds

    if pid is None:
        return 0.0
    with contextlib.suppress(OSError):
        return cpu_seconds(pid)
    return 0.0


def _child(args: list[str], log: TextIO, other_pid: int | None) -> dict[str, Any]:
    """Run ``ceilings.py ARGS`` and read its result; ``other_cpu_percent``: the CPU of
    process ``other_pid`` (the feed, nats-server) over the child's window."""
    from bench import _die_with_parent, _stop

    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        preexec_fn=_die_with_parent,
    )
    try:
        assert proc.stdout is not None
        start_cpu = start_t = None
        result: dict[str, Any] | None = None
        for line in proc.stdout:
            if line.strip() == "window":
                start_cpu, start_t = _cpu(other_pid), time.monotonic()
            elif line.startswith("{"):
                end_cpu, end_t = _cpu(other_pid), time.monotonic()
                result = json.loads(line)
                if start_cpu is not None and start_t is not None and end_t > start_t:
                    result["other_cpu_percent"] = round(
                        100 * (end_cpu - start_cpu) / (end_t - start_t)
                    )
        if proc.wait() != 0 or result is None:
            raise RuntimeError(f"ceiling {args[0]} failed ({proc.returncode}); see {log.name}")
        return result
    finally:
        _stop(proc)


def measure(
    tmp: Path,
    *,
    warmup: float = WARMUP,
    seconds: float = SECONDS,
    messages: int = MESSAGES,
) -> dict[str, Any]:
    """Every ceiling, each with fresh processes (logs and stores under ``tmp``)."""
    from feed import BINANCE_PATH

    from bench import Feed, write_config
    from relay.natsd import NatsServer, free_port

    out: dict[str, Any] = {"warmup_s": warmup, "seconds": seconds, "clients": {}}
    for lib in CLIENTS:
        name = lib.replace(".", "_")
        _say(f"[ceilings] {lib}: the feed at full speed into a bare client")
        feed = Feed(
            0.0,
            warmup + seconds + 60,
            tmp / f"ceiling-{name}-feed.log",
            [
                sys.executable,
                str(HERE / "feed.py"),
                "--venues",
                "binance",
                "--max-mb",
                str(FEED_MB),
            ],
        )
        try:
            ws_url = feed.wait_listening()[0] + BINANCE_PATH
            with (tmp / f"ceiling-{name}.log").open("w") as log:
                result = _child(
                    ["client", lib, ws_url, str(warmup), str(seconds)], log, feed.proc.pid
                )
        finally:
            feed.close()
        result["feed_cpu_percent"] = result.pop("other_cpu_percent", None)
        out["clients"][lib] = result
    _say("[ceilings] publisher: pre-encoded messages into nats-server (file storage)")
    with NatsServer(tmp / "ceiling-nats") as server:
        # The bench's own config: its streams, publish window and buffers; the venue URLs
        # are never dialled here.
        config = write_config(
            tmp / "ceiling.toml",
            server.url,
            "ws://127.0.0.1:9",
            "http://127.0.0.1:9",
            free_port(),
            venues=("binance",),
        )
        nats_proc = getattr(server, "_proc", None)
        with (tmp / "ceiling-publisher.log").open("w") as log:
            result = _child(
                ["publish", str(config), str(warmup), str(seconds), str(messages)],
                log,
                nats_proc.pid if nats_proc is not None else None,
            )
    result["nats_cpu_percent"] = result.pop("other_cpu_percent", None)
    out["publisher"] = result
    return out


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The relay's saturated frames/s and stored msgs/s as shares of the ceilings."""
    ceilings, saturated = results.get("ceilings", {}), results.get("saturated")
    if not ceilings or not saturated:
        return {}
    out: dict[str, Any] = {}
    for lib, client in ceilings.get("clients", {}).items():
        if client.get("per_s"):
            out[f"frames_vs_{lib}"] = round(saturated["frames_per_s"] / client["per_s"], 3)
    publisher = ceilings.get("publisher", {})
    if publisher.get("per_s"):
        out["stored_vs_publisher"] = round(
            saturated["published_msgs_per_s"] / publisher["per_s"], 3
        )
    return out


def table(results: dict[str, Any]) -> str:
    """The ceilings, and the relay's saturated figures as shares of them."""
    ceilings = results["ceilings"]
    saturated = results.get("saturated") or {}
    rows: list[tuple[str, ...]] = [
        ("ceiling", "per s", "its CPU %", "per CPU s", "feed/nats CPU %", "relay / ceiling")
    ]

    def number(value: Any, fmt: str = "{:,.0f}") -> str:
        return "-" if value is None else fmt.format(value)

    def row(label: str, c: dict[str, Any], other: str, relay_key: str, unit: str) -> None:
        share = "-"
        if saturated and c.get("per_s"):
            share = f"{saturated[relay_key] / c['per_s']:.0%} ({unit})"
        if c.get("ran_out"):
            label += " (ran out)"
        rows.append(
            (
                label,
                number(c.get("per_s")),
                number(c.get("cpu_percent")),
                number(c.get("per_cpu_s")),
                number(c.get(other)),
                share,
            )
        )

    for lib, c in ceilings["clients"].items():
        row(f"read: bare {lib} client", c, "feed_cpu_percent", "frames_per_s", "frames/s")
    row(
        "publish: Publisher + OutageBuffer",
        ceilings["publisher"],
        "nats_cpu_percent",
        "published_msgs_per_s",
        "stored/s",
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"{r[0]:<{widths[0]}}" + "".join(f"  {r[i]:>{widths[i]}}" for i in range(1, len(r)))
        for r in rows
    ]
    if saturated:
        lines.append(
            f"relay, saturated: {saturated['frames_per_s']:,.0f} frames/s read, "
            f"{saturated['published_msgs_per_s']:,.0f} msgs/s stored"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The child processes' command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/ceilings.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    client = sub.add_parser("client", help="count the frames of a feed with a bare client")
    client.add_argument("lib", choices=CLIENTS)
    client.add_argument("url")
    client.add_argument("warmup", type=float)
    client.add_argument("seconds", type=float)
    publish = sub.add_parser("publish", help="the publisher alone into a nats-server")
    publish.add_argument("config", type=Path, help="a relay config (the bench's)")
    publish.add_argument("warmup", type=float)
    publish.add_argument("seconds", type=float)
    publish.add_argument("messages", type=int)
    args = parser.parse_args(argv)
    # Each prints its result and exits the process (finish).
    if args.what == "client":
        trio.run(_client, args.lib, args.url, args.warmup, args.seconds)
    else:
        trio.run(_publish, args.config, args.warmup, args.seconds, args.messages)
    return 1


if __name__ == "__main__":
    sys.exit(main())
