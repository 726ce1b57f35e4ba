"""Running the API as a child process: start it, wait until it answers `/readyz`, stop it by its own PID.

What the tests, the benchmarks and scripts that drive a real server share, so each of them starts and stops a
server the same way (a server that exits or is not ready in time is an error quoting the end of its log).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

READY_PATH = "/readyz"


class ServerNotReady(RuntimeError):
    """The server exited, or did not answer its readiness probe in time; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=1) as response:  # noqa: S310 - our own http URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    """Return when ``url`` answers its readiness probe; raise :class:`ServerNotReady` if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerNotReady(f"the server exited with {process.returncode}: {_log_tail(log)}")
        if is_ready(url):
            return
        time.sleep(0.25)
    raise ServerNotReady(f"the server was not ready in {timeout_s:g} s: {_log_tail(log)}")


def stop(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM to the server's own PID, then wait (SIGKILL if it does not stop in time)."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextmanager
def running_server(command: Sequence[str], url: str, log: Path, env: Mapping[str, str] | None = None,
                   cwd: str | Path | None = None, timeout_s: float = 120.0) -> Iterator[subprocess.Popen]:
    """Start ``command`` (output to ``log``), yield the process once ``url`` is ready, stop it by PID after."""
    with open(log, "w") as output:
        process = subprocess.Popen(list(command), cwd=cwd, env=dict(env) if env is not None else None,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(url, process, log, timeout_s)
        yield process
    finally:
        stop(process)


__all__ = ["ServerNotReady", "free_port", "is_ready", "running_server", "stop", "wait_until_ready"]
