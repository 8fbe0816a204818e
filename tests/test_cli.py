"""The command line as an operator meets it: real processes, exit codes and messages."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
CONFIGS = Path(__file__).parent / "data" / "configs"


def relay(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_check_prints_the_plan() -> None:
    result = relay("check", "-c", "config/relay.toml")
    assert result.returncode == 0, result.stderr
    assert "market.binance.btc-usdt.trade -> MARKET_TRADES" in result.stdout
    assert "market.binance.eth-usdt.l2_orderbook -> MARKET_BOOKS" in result.stdout


@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_config_exits_2_naming_file_and_key(command: str) -> None:
    path = CONFIGS / "bad_data_type_enum.toml"
    result = relay(command, "-c", str(path))
    assert result.returncode == 2
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    assert result.stderr.strip() == f"relay: {path}: {expected}"


def test_run_with_bad_config_opens_no_connection(tmp_path: Path) -> None:
    """Config errors are found before any socket is opened: NATS here never sees a client."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        config = tmp_path / "relay.toml"
        config.write_text(
            f"""
[nats]
urls = ["nats://127.0.0.1:{port}"]

[[venues]]
id = "binance"
adapter = "binance"
[venues.connection]
ws_url = "ws://127.0.0.1:{port}/stream"

[[venues.subscriptions]]
instruments = ["BTCUSDT"]
data_types = ["trade", "candles"]
"""
        )
        result = relay("run", "-c", str(config))
        assert result.returncode == 2
        assert "venues[0].subscriptions[0].data_types[1]: 'candles' is not one of" in result.stderr
        with pytest.raises(TimeoutError):
            listener.accept()


def test_missing_config_file_exits_2() -> None:
    result = relay("check", "-c", "no/such/relay.toml")
    assert result.returncode == 2
    assert "no/such/relay.toml" in result.stderr


@pytest.mark.parametrize(
    "args", [(), ("run",), ("bogus",), ("check", "-c", "config/relay.toml", "--extra")]
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = relay(*args)
    assert result.returncode == 2
    assert "usage: relay" in result.stderr


def test_venues_table_is_the_one_in_the_readme() -> None:
    result = relay("venues")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.strip().splitlines()
    assert rows[0].startswith("| adapter | trade | ticker | l2_orderbook |")
    assert len(rows) == 2 + len(list((ROOT / "adapters").glob("[!_]*.py")))
    assert result.stdout.strip() in (ROOT / "README.md").read_text()
