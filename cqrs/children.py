"""Child processes of a supervisor (``cqrs up``, ``--workers N``): started in their own
session, their output echoed line by line and kept for post-mortems, stopped with
SIGTERM then SIGKILL.

Children log in the supervisor's own format (``CQRS_LOG_FORMAT`` is set to it, since
their stderr is a pipe and ``auto`` would make them JSON): as text, each line is echoed
with a ``name | `` prefix; as JSON, a child's JSON lines pass through untouched (each
names its process and pid) and anything else it prints is wrapped in a JSON line, so
the supervisor's whole output stays one object per line.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType

from common import logs
from common.settings import Settings

STOP_TIMEOUT_S = 15.0  # at least; see stop_timeout
_OUTPUT_LOCK = threading.Lock()


class Child:
    """A child process whose output is echoed with a name prefix and kept for post-mortems."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        self.name = name
        self._lines: deque[str] = deque(maxlen=40)
        self._json = logs.active_format() == "json"
        self.process = subprocess.Popen(
            argv,
            env={**env, "CQRS_LOG_FORMAT": logs.active_format()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C in the terminal reaches only `cqrs up`, which then stops
            # the children in order instead of racing their own signal handlers.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._echo, name=f"echo-{name}", daemon=True)
        self._reader.start()

    def _echo(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._lines.append(line)
            if not self._json:
                say(f"{self.name} | {line}")
            elif line.startswith("{") and line.endswith("}"):
                say(line, raw=True)
            else:
                say(logs.json_line(line, process=self.name, logger="stdout"), raw=True)

    def drain(self, timeout: float = 2.0) -> None:
        """Wait for the output of an exited process to be read to the end."""
        self._reader.join(timeout)

    def tail(self) -> str:
        """The last lines the process printed."""
        return "\n".join(self._lines) or "(no output)"


def stop_timeout(settings: Settings) -> float:
    """How long a child may take to stop after SIGTERM: the servers' drain and grace
    periods (CQRS_SHUTDOWN_DRAIN_MS, CQRS_SHUTDOWN_GRACE_MS) and a margin."""
    return max(
        STOP_TIMEOUT_S, (settings.shutdown_drain_ms + settings.shutdown_grace_ms) / 1000 + 10
    )


def stop_children(children: list[Child], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every running child, wait up to ``timeout`` in all, then SIGKILL the rest."""
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop within {timeout:.0f} s; killing it", err=True)
            child.process.kill()
            child.process.wait()
        child.drain()


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM/SIGHUP; the previous handlers come back afterwards."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def say(text: str, *, err: bool = False, raw: bool = False) -> None:
    """Print whole lines; the echo threads print concurrently. With JSON logs, ``text``
    becomes one JSON line unless ``raw`` (it is one already)."""
    if not raw and logs.active_format() == "json":
        text = logs.json_line(text, level="ERROR" if err else "INFO", logger="cqrs.supervisor")
    stream = sys.stderr if err else sys.stdout
    with _OUTPUT_LOCK:
        stream.write(text + "\n")
        stream.flush()


_PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """SIGTERM this process when ``parent`` exits, however it ends (SIGKILL included), so a
    worker never outlives its supervisor (Linux ``PR_SET_PDEATHSIG``; elsewhere nothing).
    A parent already gone before the request took effect is checked for too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
