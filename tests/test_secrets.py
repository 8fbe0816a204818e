"""Secrets never appear in logs, ``/health``, errors or ``relay check`` output.

The secrets come in through the environment (``${VAR}`` in the config), as an operator
supplies them, and are distinctive strings, so one ``in`` per output is the whole check.
Each end-to-end test also asserts that the secret was really in play (the venue or NATS got
it, the error path was taken), or its absence from the output would prove nothing.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import structlog
import trio
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from relay import cli, redact
from relay.config import ConfigError, load_config
from relay.health import ConnectionHealth, RelayHealth, VenueHealth
from relay.metrics import Metrics
from relay.natsd import find_nats_server, free_port, responding
from relay.redact import MIN_SECRET_LENGTH, RedactingFormatter, Redactor
from relay.sidecar import make_app
from tests.e2e_support import eventually, relay_process

ROOT = Path(__file__).parent.parent

SECRETS = {
    "RELAY_T_NATS_PW": "natsPW-7f3a9c1e",
    "RELAY_T_NATS_TOKEN": "natsTOKEN-5d2b8e40",
    "RELAY_T_URL_PW": "urlPW-c41f0a7d",
    "RELAY_T_URL_TOKEN": "urlTOKEN-9b7e33a2",
    "RELAY_T_WS_PW": "wsPW-2e6d1f88",
    "RELAY_T_REST_PW": "restPW-81c7a5b3",
    "RELAY_T_KEY_ID": "PKTESTKEYID0123456789",
    "RELAY_T_SECRET_KEY": "secretKEY-4c9e1b7a0d3f6a2e8b5c1d4f7a0e3b6c9d2f5a8",
}


def assert_no_secret(text: str, secrets: dict[str, str] = SECRETS) -> None:
    leaked = [name for name, value in secrets.items() if value in text]
    assert not leaked, f"{leaked} leaked in:\n{text}"


def assert_no_fragment(text: str, secret: str, size: int = 12) -> None:
    """Not even part of ``secret``: an elided log line can show a secret's start or end."""
    fragments = {secret[i : i + size] for i in range(len(secret) - size + 1)}
    shown = sorted(fragment for fragment in fragments if fragment in text)
    assert not shown, f"parts {shown} of a secret in:\n{text}"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The secrets in this process's environment, which relay subprocesses inherit."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


@pytest.fixture
def installed() -> Iterator[None]:
    """Restore the process-wide redactor after a test that installs one."""
    before = redact.active()
    yield
    redact.install(before)


# ---------------------------------------------------------------------------------------------
# The Redactor.


def test_redactor_masks_every_secret_longest_first() -> None:
    redactor = Redactor(["abcd1234", "abcd", "zz-other-zz"])
    assert redactor.redact("x abcd1234 y abcd z zz-other-zz.") == "x *** y *** z ***."
    # The longer secret containing the shorter one is masked whole, not as "***1234".
    assert redactor.redact("[abcd12345]") == "[***5]"


def test_redactor_masks_url_userinfo_without_knowing_the_secret() -> None:
    redactor = Redactor()
    text = (
        "Client error '401' for url 'http://user:pa55@127.0.0.1:8/v2?x=a@b' "
        "nats://tok3n@10.0.0.1:4222, wss://host/stream?streams=btcusdt@trade"
    )
    assert redactor.redact(text) == (
        "Client error '401' for url 'http://***@127.0.0.1:8/v2?x=a@b' "
        "nats://***@10.0.0.1:4222, wss://host/stream?streams=btcusdt@trade"
    )


def test_redactor_ignores_secrets_shorter_than_the_minimum() -> None:
    short = "p" * (MIN_SECRET_LENGTH - 1)
    redactor = Redactor([short, "", "long-enough"])
    assert redactor.secret_count == 1
    assert redactor.redact(f"{short} in 'apple' long-enough") == f"{short} in 'apple' ***"


def test_redactor_matches_repr_json_and_percent_encoded_spellings() -> None:
    secret = "it's\\a\"pa ss"
    redactor = Redactor([secret])
    shown = [repr(ValueError(secret)), json.dumps({"e": secret}), f"u:{quote(secret, safe='')}@"]
    assert [redactor.redact(text) for text in shown] == [
        "ValueError('***')",
        '{"e": "***"}',
        "u:***@",
    ]


def test_redact_value_walks_containers_and_reprs_objects() -> None:
    redactor = Redactor(["s3cr3t-value"])
    value = {
        "n": 1,
        "ok": True,
        "none": None,
        "list": ["a s3cr3t-value", ("s3cr3t-value", 2.5)],
        "error": OSError("connect to nats://u:s3cr3t-value@h failed"),
    }
    assert redactor.redact_value(value) == {
        "n": 1,
        "ok": True,
        "none": None,
        "list": ["a ***", ["***", 2.5]],
        "error": "OSError('connect to nats://***@h failed')",
    }


def test_redactor_from_config_knows_every_kind_of_secret(tmp_path: Path) -> None:
    seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU"
    jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJTRUNSRVQifQ.c2lnbmF0dXJl"
    (tmp_path / "user.creds").write_text(
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
    config = tmp_path / "relay.toml"
    config.write_text(
        f"""
[nats]
urls = ["nats://alice:${{RELAY_T_URL_PW}}@127.0.0.1:4222", "nats://${{RELAY_T_URL_TOKEN}}@h:4223"]
auth = "creds"
creds_file = "{tmp_path / "user.creds"}"

[[venues]]
id = "alpaca"
adapter = "alpaca"
[venues.connection]
rest_url = "https://restuser:${{RELAY_T_REST_PW}}@127.0.0.1:1"
[venues.credentials]
key_id = "${{RELAY_T_KEY_ID}}"
secret_key = "${{RELAY_T_SECRET_KEY}}"
[[venues.subscriptions]]
instruments = ["BTC/USD"]
data_types = ["trade"]
"""
    )
    redactor = Redactor.from_config(load_config(config, env=SECRETS))
    text = " ".join([*SECRETS.values(), seed, jwt, "alice", "IMPORTANT", "relay"])
    redacted = redactor.redact(text)
    in_config = ("RELAY_T_URL_PW", "RELAY_T_URL_TOKEN", "RELAY_T_REST_PW", "RELAY_T_KEY_ID")
    assert_no_secret(redacted, {k: SECRETS[k] for k in (*in_config, "RELAY_T_SECRET_KEY")})
    assert seed not in redacted and jwt not in redacted
    # A user name and the prose of a creds file are not secrets.
    assert redacted.endswith(" alice IMPORTANT relay")


@pytest.mark.parametrize(
    ("auth", "masked"),
    [
        ('"nkey"\nnkey_seed_file = "{seed_file}"', "seed *** token t0k3n-xyz pw p4ss-word"),
        ('"token"\ntoken = "t0k3n-xyz"', "seed {seed} token *** pw p4ss-word"),
        (
            '"user_password"\nuser = "relay"\npassword = "p4ss-word"',
            "seed {seed} token t0k3n-xyz pw ***",
        ),
    ],
)
def test_redactor_from_config_knows_the_secret_of_each_auth_mode(
    tmp_path: Path, auth: str, masked: str
) -> None:
    seed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
    (tmp_path / "seed.nk").write_text(seed + "\n")
    config = tmp_path / "relay.toml"
    config.write_text(f"[nats]\nauth = {auth.format(seed_file=tmp_path / 'seed.nk')}\n")
    redactor = Redactor.from_config(load_config(config))
    assert redactor.redact(f"seed {seed} token t0k3n-xyz pw p4ss-word") == masked.format(seed=seed)


def test_redacting_a_typical_log_event_takes_microseconds() -> None:
    redactor = Redactor(SECRETS.values())
    event = {
        "venue": "binance",
        "url": "wss://stream.binance.com:9443/stream?streams=btcusdt@trade",
        "error": "ConnectionRefusedError(111, \"Connect call failed ('127.0.0.1', 9443)\")",
        "retry_in_s": 0.5,
        "circuit": "closed",
        "event": "venue connection failed",
        "level": "warning",
        "timestamp": "2026-01-01T00:00:00.000000Z",
    }
    runs = 2000
    best = min(timeit.repeat(lambda: redactor(None, "warning", dict(event)), number=runs, repeat=5))
    # A few µs on an idle machine; the bound leaves room for a loaded one.
    assert best / runs < 25e-6, f"{best / runs * 1e6:.1f} µs per event"


# ---------------------------------------------------------------------------------------------
# The paths, in process: structlog chain, stdlib formatter, excepthook, /health.


@pytest.mark.parametrize(
    "renderer", [structlog.processors.JSONRenderer(), structlog.dev.ConsoleRenderer(colors=False)]
)
def test_structlog_chain_redacts_values_and_tracebacks(renderer: structlog.types.Processor) -> None:
    redactor = Redactor([SECRETS["RELAY_T_KEY_ID"]])
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[structlog.processors.format_exc_info, redactor, renderer],
    )
    key = SECRETS["RELAY_T_KEY_ID"]
    try:
        raise RuntimeError(f"auth failed for key {key} at ws://u:{SECRETS['RELAY_T_WS_PW']}@h")
    except RuntimeError:
        line = log.error("auth", frame={"key": key}, keys=[key], exc_info=True)
    assert "RuntimeError: auth failed for key *** at ws://***@h" in line
    assert_no_secret(line)


def test_stdlib_formatter_redacts_message_args_and_traceback(installed: None) -> None:
    redact.install(Redactor([SECRETS["RELAY_T_SECRET_KEY"]]))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("tests.secrets.stdlib")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("HTTP Request: GET %s", "http://u:p4ssw0rd@127.0.0.1/x")
        try:
            raise ValueError(SECRETS["RELAY_T_SECRET_KEY"])
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "HTTP Request: GET http://***@127.0.0.1/x" in text and "ValueError: ***" in text
    assert "p4ssw0rd" not in text
    assert_no_secret(text)


def test_uncaught_exception_is_redacted(installed: None, capsys: pytest.CaptureFixture) -> None:
    redact.install(Redactor([SECRETS["RELAY_T_NATS_PW"]]))
    try:
        raise OSError(f"password {SECRETS['RELAY_T_NATS_PW']} refused")
    except OSError as exc:
        cli._redacting_excepthook(OSError, exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "OSError: password *** refused" in err
    assert_no_secret(err)


async def test_health_document_is_redacted() -> None:
    class Publisher:
        connected = provisioned = False
        in_flight = backlog = 0
        last_error = f"NATS: Error('nats://alice:{SECRETS['RELAY_T_URL_PW']}@127.0.0.1:4222')"

    health = RelayHealth(publisher=Publisher())
    venue = VenueHealth("alpaca", "alpaca", start_error=f"bad key {SECRETS['RELAY_T_KEY_ID']}")
    venue.connections = [ConnectionHealth("ws://h", last_error="boom")]
    health.venues["alpaca"] = venue
    app = make_app(health, Metrics(), Redactor([SECRETS["RELAY_T_KEY_ID"]]))
    response = await app.test_client().get("/health")
    body = (await response.get_data()).decode()
    assert response.status_code == 503
    document = json.loads(body)
    assert document["nats"]["last_error"] == "NATS: Error('nats://***@127.0.0.1:4222')"
    assert document["venues"]["alpaca"]["last_error"] == "bad key ***"
    assert_no_secret(body)


# ---------------------------------------------------------------------------------------------
# Config errors.


def relay_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_config_error_on_a_credential_bearing_url_does_not_echo_it(
    tmp_path: Path, secret_env: dict[str, str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[nats]\nurls = ["alice:${RELAY_T_URL_PW}@127.0.0.1:4222"]\n')
    for command in ("check", "run"):
        result = relay_cli(command, "-c", str(config))
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"relay: {config}: nats.urls[0]: '***@127.0.0.1:4222' is not a nats://, tls://, "
            "ws:// or wss:// URL"
        )
        assert_no_secret(result.stdout + result.stderr)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[nats]\nurls = ["nats//alice:${RELAY_T_URL_PW}@127.0.0.1:4222"]', "nats.urls[0]"),
        ('[nats]\nurls = ["nats://alice:${RELAY_T_URL_PW}@[::1:4222"]', "nats.urls[0]"),
        ('[nats]\nauth = "none"\ntoken = "${RELAY_T_NATS_TOKEN}"', "nats.token"),
        ('[nats]\nauth = "user_password"\nuser = "a"\npassword = 12345678', "nats.password"),
        ('[nats]\nauth = "token"\ntoken = ["${RELAY_T_NATS_TOKEN}"]', "nats.token"),
        ("[venues.credentials]\nkey_id = 12345678\nsecret_key = 87654321", "venues[0].credentials"),
        (
            '[venues.credentials]\nkey_id = "${RELAY_T_KEY_ID}"\nsecret = "${RELAY_T_SECRET_KEY}"',
            "venues[0].credentials.secret",
        ),
        (
            '[venues.connection]\nws_url = "u:${RELAY_T_WS_PW}@127.0.0.1/x"',
            "venues[0].connection.ws_url",
        ),
        (
            '[venues.connection]\nrest_url = "ftp://u:${RELAY_T_REST_PW}@127.0.0.1"',
            "venues[0].connection.rest_url",
        ),
    ],
)
def test_config_errors_name_the_key_not_the_secret(tmp_path: Path, toml: str, key: str) -> None:
    venue = '[[venues]]\nid = "alpaca"\nadapter = "alpaca"\n'
    subs = '[[venues.subscriptions]]\ninstruments = ["BTC/USD"]\ndata_types = ["trade"]\n'
    config = tmp_path / "relay.toml"
    config.write_text(f"{toml}\n" if toml.startswith("[nats]") else f"{venue}{toml}\n{subs}")
    with pytest.raises(ConfigError) as raised:
        load_config(config, env=SECRETS)
    assert raised.value.key_path == key
    assert_no_secret(str(raised.value))
    assert_no_secret(str(raised.value), {"literal": "12345678", "other": "87654321"})


# ---------------------------------------------------------------------------------------------
# `relay check`, against a local REST server that refuses the keys.


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 401 and records the request headers."""

    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def rest_401() -> Iterator[tuple[int, list[dict[str, str]]]]:
    """A loopback HTTP server answering 401; yields its port and the headers it got."""
    handler = type("Handler", (_Unauthorized,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_check_output_shows_no_secret(
    tmp_path: Path, secret_env: dict[str, str], rest_401: tuple[int, list[dict[str, str]]]
) -> None:
    rest_port, seen = rest_401
    config = tmp_path / "relay.toml"
    config.write_text(
        f"""
[service]
state_dir = "{tmp_path / "state"}"
[nats]
urls = ["nats://alice:${{RELAY_T_URL_PW}}@127.0.0.1:4222", "nats://${{RELAY_T_URL_TOKEN}}@h:4223"]
auth = "token"
token = "${{RELAY_T_NATS_TOKEN}}"

[[venues]]
id = "alpaca"
adapter = "alpaca"
[venues.connection]
ws_url = "wss://wsuser:${{RELAY_T_WS_PW}}@127.0.0.1:1"
rest_url = "http://restuser:${{RELAY_T_REST_PW}}@127.0.0.1:{rest_port}"
[venues.credentials]
key_id = "${{RELAY_T_KEY_ID}}"
secret_key = "${{RELAY_T_SECRET_KEY}}"
[[venues.subscriptions]]
instruments = ["BTC/USD"]
data_types = ["trade"]
"""
    )
    result = relay_cli("check", "-c", str(config), "--fetch")
    assert result.returncode == 0, result.stderr
    # The secrets were in play: the venue got the keys, and httpx's error names the URL.
    assert seen and seen[0]["APCA-API-KEY-ID"] == SECRETS["RELAY_T_KEY_ID"]
    assert "instruments not verified: HTTPStatusError(" in result.stdout
    assert "for url 'http://***@127.0.0.1:" in result.stdout
    assert "nats: nats://***@127.0.0.1:4222, nats://***@h:4223 (auth token" in result.stdout
    assert_no_secret(result.stdout + result.stderr)


# ---------------------------------------------------------------------------------------------
# `relay run`: the log and /health, with NATS auth failing or venues failing.


@pytest.fixture
def auth_nats(tmp_path: Path) -> Iterator[int]:
    """A ``nats-server -js`` on loopback requiring user ``alice`` with password
    RELAY_T_NATS_PW; yields its port."""
    port = free_port()
    auth = ["--user", "alice", "--pass", SECRETS["RELAY_T_NATS_PW"]]
    store = str(tmp_path / "nats")
    with (tmp_path / "nats.log").open("wb") as out:
        proc = subprocess.Popen(
            [find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store, *auth],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(500):
            if responding(f"nats://127.0.0.1:{port}", timeout=0.2):
                break
            assert proc.poll() is None, (tmp_path / "nats.log").read_text()
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def get_health(http: httpx.AsyncClient, port: int) -> str | None:
    try:
        return (await http.get(f"http://127.0.0.1:{port}/health")).text
    except httpx.HTTPError:
        return None


@pytest.mark.parametrize("wrong", ["password", "url_password"])
async def test_nats_auth_failure_logs_and_health_show_no_secret(
    tmp_path: Path, secret_env: dict[str, str], auth_nats: int, wrong: str
) -> None:
    """The server refuses the password (from the config or from the URL's user info), a
    second URL is a closed port: the relay keeps retrying and reporting, secrets unseen."""
    http_port = free_port()
    if wrong == "password":
        urls = f'"nats://127.0.0.1:{auth_nats}"'
        # A wrong password, and a secret all the same.
        auth = 'auth = "user_password"\nuser = "alice"\npassword = "${RELAY_T_NATS_TOKEN}"'
    else:
        urls = f'"nats://alice:${{RELAY_T_URL_PW}}@127.0.0.1:{auth_nats}"'
        auth = 'auth = "none"'
    closed = f'"nats://bob:${{RELAY_T_URL_PW}}@127.0.0.1:{free_port()}"'
    config = tmp_path / "relay.toml"
    config.write_text(
        f"""
[service]
log_level = "debug"
state_dir = "{tmp_path / "state"}"
[nats]
urls = [{urls}, {closed}]
{auth}
connect_timeout_ms = 500
reconnect_time_wait_ms = 100
[http]
port = {http_port}

[[venues]]
id = "alpaca"
adapter = "alpaca"
[venues.credentials]
key_id = "${{RELAY_T_KEY_ID}}"
secret_key = "${{RELAY_T_SECRET_KEY}}"
[[venues.subscriptions]]
instruments = ["BTC/USD"]
data_types = ["trade"]
"""
    )
    log = tmp_path / "relay.log"
    health: list[str] = []

    async def refused_and_reported() -> bool:
        text = log.read_text()
        body = await get_health(http, http_port)
        if body is None or "Authorization Violation" not in text:
            return False
        if "Connect call failed" not in text or json.loads(body)["nats"]["last_error"] is None:
            return False
        health.append(body)
        return True

    async with relay_process(config, log), httpx.AsyncClient(trust_env=False) as http:
        await eventually(refused_and_reported, timeout=30)
        await trio.sleep(0.5)  # a few more retries, logged
        health.append(await get_health(http, http_port) or "")
    assert_no_secret(log.read_text())
    for body in health:
        assert_no_secret(body)


def _venue_ws_server() -> tuple[object, int, list[str]]:
    """A loopback WebSocket server speaking just enough Alpaca: it greets, accepts the
    auth frame (recorded), and then only listens."""
    frames: list[str] = []

    def handler(ws: ServerConnection) -> None:
        try:
            ws.send('[{"T":"success","msg":"connected"}]')
            for message in ws:
                frames.append(str(message))
                if '"auth"' in str(message):
                    ws.send('[{"T":"success","msg":"authenticated"}]')
        except Exception:  # the relay hanging up is the normal end
            pass

    server = ws_serve(handler, "127.0.0.1", 0)
    return server, server.socket.getsockname()[1], frames


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_venue_failures_logs_and_health_show_no_secret(
    tmp_path: Path,
    secret_env: dict[str, str],
    auth_nats: int,
    rest_401: tuple[int, list[dict[str, str]]],
    log_format: str,
) -> None:
    """NATS accepts the relay; one Alpaca venue authenticates over a WebSocket with the keys
    (at DEBUG logging, where websockets would print the auth frame), its REST list answers
    401 to a URL with user info, and a second venue's WebSocket URL (with user info) is a
    closed port."""
    rest_port, seen = rest_401
    ws_server, ws_port, frames = _venue_ws_server()
    thread = threading.Thread(target=ws_server.serve_forever, daemon=True)  # type: ignore[attr-defined]
    thread.start()
    http_port = free_port()
    venue = """
[[venues]]
id = "{id}"
adapter = "alpaca"
[venues.connection]
ws_url = "ws://wsuser:${{RELAY_T_WS_PW}}@127.0.0.1:{ws_port}"
rest_url = "http://restuser:${{RELAY_T_REST_PW}}@127.0.0.1:{rest_port}"
[venues.backoff]
initial_ms = 100
[venues.credentials]
key_id = "${{RELAY_T_KEY_ID}}"
secret_key = "${{RELAY_T_SECRET_KEY}}"
[[venues.subscriptions]]
instruments = ["BTC/USD"]
data_types = ["trade"]
"""
    config = tmp_path / "relay.toml"
    config.write_text(
        f"""
[service]
log_level = "debug"
log_format = "{log_format}"
state_dir = "{tmp_path / "state"}"
[nats]
urls = ["nats://127.0.0.1:{auth_nats}"]
auth = "user_password"
user = "alice"
password = "${{RELAY_T_NATS_PW}}"
[[nats.streams]]
name = "MARKET"
subjects = ["market.>"]
storage = "memory"
[http]
port = {http_port}
"""
        + venue.format(id="alpaca", ws_port=ws_port, rest_port=rest_port)
        + venue.format(id="alpaca-down", ws_port=free_port(), rest_port=rest_port)
    )
    log = tmp_path / "relay.log"
    health: list[str] = []

    async def failed_and_reported() -> bool:
        body = await get_health(http, http_port)
        if body is None or not any('"auth"' in frame for frame in frames):
            return False
        venues = json.loads(body)["venues"]
        if venues.get("alpaca-down", {}).get("last_error") is None:
            return False
        text = log.read_text()
        if "HTTPStatusError" not in text or "venue connection failed" not in text:
            return False
        health.append(body)
        return True

    try:
        async with relay_process(config, log), httpx.AsyncClient(trust_env=False) as http:
            await eventually(failed_and_reported, timeout=30)
    finally:
        ws_server.shutdown()  # type: ignore[attr-defined]
        thread.join()
    text = log.read_text()
    assert_no_secret(text)
    for key in ("RELAY_T_KEY_ID", "RELAY_T_SECRET_KEY"):
        assert_no_fragment(text, SECRETS[key])
    for body in health:
        assert_no_secret(body)
    # The secrets were in play and the leaky paths were taken.
    assert any(SECRETS["RELAY_T_SECRET_KEY"] in frame for frame in frames)
    assert seen and seen[0]["APCA-API-SECRET-KEY"] == SECRETS["RELAY_T_SECRET_KEY"]
    assert "HTTP Request: GET http://***@127.0.0.1:" in text  # httpx's own INFO line
    assert "DEBUG httpcore" in text  # DEBUG logging really was on
    assert "ws://***@127.0.0.1:" in json.loads(health[0])["venues"]["alpaca-down"]["last_error"]
