"""What every part of :mod:`cqrs.instances` shares: errors, where binaries are looked for,
and the interface of a started instance."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PG_BIN_GLOBS: tuple[str, ...] = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin")
START_TIMEOUT_S = 60.0


class ServicesUnavailable(Exception):
    """A service is unreachable and cannot be started here; the message says what to do."""


class InstanceError(Exception):
    """A private instance could not be started; the message includes its log tail."""


class PrivateInstance(Protocol):
    """A server started by :func:`ensure_services`."""

    name: str
    url: str
    data_dir: Path

    def stop(self) -> None:
        """Stop the server; safe to call twice."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Where to look for server binaries (injectable so tests are deterministic)."""

    path: str | None = None  # None: the PATH environment variable
    pg_bin_globs: Sequence[str] = PG_BIN_GLOBS


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it takes longer than ``timeout``."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL: the server dies at once, saving nothing."""
    if process is not None:
        process.kill()
        process.wait()
