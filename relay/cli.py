"""Command line: ``relay run``, ``relay check``, ``relay replay``, ``relay venues``.

Exit codes: 0 after a clean run or a valid check, 2 for bad input (command line, config,
capture), 1 when the relay fails at run time.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from functools import partial
from pathlib import Path

import structlog
import trio

from relay import catalogs
from relay.config import Config, ConfigError, load_config, plan_text

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the relay until SIGINT/SIGTERM")
    run.add_argument("-c", "--config", type=Path, required=True, help="relay.toml")
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
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check":
        print(plan_text(config))
        notes, errors = trio.run(partial(catalogs.check, config, fetch=args.fetch))
        print("\ninstruments:")
        print("\n".join(f"  {note}" for note in notes) or "  no venue publishes a list")
        for error in errors:
            print(f"relay: {args.config}: {error}", file=sys.stderr)
        return EXIT_USAGE if errors else EXIT_OK
    configure_logging(config)
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
    relay = Relay(config)
    stop = trio.Event()

    async def stop_on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal received", signal=signal.Signals(signum).name)
                stop.set()
                return

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal)
            await relay.run(stop)
            nursery.cancel_scope.cancel()
    except Exception:
        log.exception("relay failed")
        return EXIT_FAILED
    log.info("relay stopped")
    return EXIT_OK


def configure_logging(config: Config) -> None:
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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
