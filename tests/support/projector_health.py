"""Asking a projector process's /healthz (on its metrics port) who leads what."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """/healthz: status and body; (0, {}) while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def every(port: int, role: str, state: str | None = None) -> bool:
    """Whether the process answers 200 and every consumer has ``role`` (and ``state``)."""
    status, body = healthz(port)
    consumers = body.get("consumers", {})
    return (
        status == 200
        and bool(consumers)
        and all(
            c["role"] == role and (state is None or c["state"] == state) for c in consumers.values()
        )
    )


def led(port: int) -> set[str]:
    """The consumers the process leads now (its services, e.g. the dispatcher, left out)."""
    _, body = healthz(port)
    return {n for n, c in body.get("consumers", {}).items() if c["role"] == "leader"}


def until(
    what: str, check: Callable[[], bool], within: float, explain: Callable[[], str] = lambda: ""
) -> float:
    """Poll ``check`` until true; the time it took. Fails after ``within`` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not {what} after {within}s\n{explain()}"
        time.sleep(0.05)
    return time.monotonic() - started
