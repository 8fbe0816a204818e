"""Command line: ``relay run``, ``relay check``, ``relay replay``, ``relay venues``.

Exit codes: 0 after a clean run or a valid check, 2 for bad input (command line, config,
capture), 1 when the relay fails at run time.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from functools import partial
from pathlib import Path
from types import TracebackType

import structlog
import trio

from relay import catalogs, redact
from relay.config import Config, ConfigError, load_config, plan_text
from relay.redact import RedactingFormatter, Redactor

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the relay until SIGINT/SIGTERM")
    run.add_argument("-c", "--config", type=Path, required=True, help="relay.toml")
    # Hidden: how the parent of `service.workers > 1` starts worker K of N (relay.workers).
    run.add_argument("--worker", metavar="K/N", help=argparse.SUPPRESS)
    run.add_argument("--worker-venues", metavar="IDS", help=argparse.SUPPRESS)
    check = commands.add_parser("check", help="validate a config and print the resolved plan")
    check.add_argument("-c", "--config", type=Path, required=True, help="relay.toml")
    check.add_argument(
        "--fetch",
        action="store_true",
        help="verify symbols against each venue's instrument list fetched now (network), "
        "not the list cached by the last run",
    )
    commands.add_parser("replay", help="serve a recorded capture as a local venue", add_help=False)
    commands.add_parser("venues", help="print the venue x data type table of the adapters")
    args, rest = parser.parse_known_args(argv)
    if args.command == "replay":
        from relay import replay

        return replay.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "venues":
        print(venues_table())
        return EXIT_OK
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        # No config, no known secrets: URL user info is still masked.
        print(redact.active().redact(f"relay: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    redactor = Redactor.from_config(config)
    redact.install(redactor)
    if args.command == "check":
        print(redactor.redact(plan_text(config)))
        notes, errors = trio.run(partial(catalogs.check, config, fetch=args.fetch))
        print("\ninstruments:")
        text = "\n".join(f"  {note}" for note in notes) or "  no venue publishes a list"
        print(redactor.redact(text))
        for error in errors:
            print(redactor.redact(f"relay: {args.config}: {error}"), file=sys.stderr)
        return EXIT_USAGE if errors else EXIT_OK
    configure_logging(config, redactor)
    if args.worker is not None or config.service.workers > 1:
        from relay import workers  # the multi-process mode: parent, or one of its workers

        return workers.main(config, args.config, args.worker, args.worker_venues)
    return trio.run(_run, config)


def venues_table() -> str:
    """A Markdown table of every adapter and the data types it publishes, from the code."""
    import adapters
    from relay.events import DataType

    types = list(DataType)
    lines = [
        "| adapter | " + " | ".join(t.value for t in types) + " |",
        "|---|" + "---|" * len(types),
    ]
    for name in adapters.NAMES:
        adapter = adapters.load(name)
        marks = ("yes" if t in adapter.data_types else "" for t in types)
        note = " (needs credentials)" if adapter.required_credentials else ""
        lines.append(f"| `{name}`{note} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


async def _run(config: Config) -> int:
    from relay.app import Relay  # imported here: `relay check` needs none of the runtime

    log = structlog.get_logger("relay")
    stop = trio.Event()

    async def stop_on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal received", signal=signal.Signals(signum).name)
                stop.set()
                return

    try:
        relay = Relay(config)  # in the try: e.g. an unreadable TLS file is logged, redacted
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal)
            await relay.run(stop)
            nursery.cancel_scope.cancel()
    except Exception:
        log.exception("relay failed")
        return EXIT_FAILED
    log.info("relay stopped")
    return EXIT_OK


def configure_logging(config: Config, redactor: Redactor | None = None) -> None:
    """structlog (JSON or console) and stdlib logging to stderr, both redacted.

    ``redactor`` (by default the installed one) masks secrets in every structlog event,
    after ``format_exc_info`` so tracebacks are covered; stdlib records (nats-py, httpx,
    Hypercorn) go through :class:`~relay.redact.RedactingFormatter`, and so does an uncaught
    exception's traceback (``sys.excepthook``). The ``websockets`` loggers are kept at INFO
    or above: at DEBUG they print every frame elided to its start and end, which can show
    part of an auth frame's secret (Alpaca's keys), and a part cannot be matched.
    """
    if redactor is not None:
        redact.install(redactor)
    level = getattr(logging, config.service.log_level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if config.service.log_format == "json"
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact.active(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line (print() writes the newline apart): the worker processes of
        # service.workers share this stderr, and their lines must not run into each other.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("websockets").setLevel(max(level, logging.INFO))
    sys.excepthook = _redacting_excepthook


def _redacting_excepthook(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """What escapes everything else (e.g. an error outside the run's nursery), redacted."""
    sys.stderr.write(redact.active().redact("".join(traceback.format_exception(kind, exc, tb))))
