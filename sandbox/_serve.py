"""Running the sandbox: ``serve`` (until cancelled) and the ``cqrs payments-sandbox`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from common import runtime
from sandbox._http import MAX_HEAD, HttpFront
from sandbox._model import Behaviour
from sandbox._provider import Sandbox

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8095


async def serve(
    host: str,
    port: int,
    behaviour: Behaviour | None = None,
    state_path: str | Path | None = None,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the sandbox on ``host:port`` (port 0: any free one) until cancelled.

    Logs one line with its URL, then calls ``ready`` with the port it listens on. With
    ``state_path``, loads the state from that file (when it exists) and saves it there after
    every change. ``behaviour`` is used (and changed by the control endpoint) in place.
    """
    sandbox = Sandbox(behaviour or Behaviour(), Path(state_path) if state_path else None)
    front = HttpFront(sandbox)
    server = await asyncio.start_server(front.handle_connection, host, port, limit=MAX_HEAD)
    bound: int = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}"
    log.info(
        "payments sandbox listening on %s (%d charges, %d refunds loaded; behaviour %s)",
        url,
        len(sandbox.charges),
        len(sandbox.refunds),
        json.dumps(sandbox.behaviour.as_json()),
        extra={"url": url},
    )
    if ready is not None:
        ready(bound)
    try:
        await asyncio.Future()  # until cancelled
    finally:
        server.close()
        await front.close()
        await server.wait_closed()


def behaviour_from_args(args: argparse.Namespace) -> Behaviour:
    """The start-up behaviour from the ``cqrs payments-sandbox`` flags (ValueError if bad)."""
    behaviour = Behaviour()
    amounts = [int(a) for a in (args.sandbox_decline_amounts or "").split(",") if a.strip()]
    behaviour.update(
        {
            "decline_rate": args.sandbox_decline_rate,
            "decline_amounts": amounts,
            "latency_ms": args.sandbox_latency_ms,
            "error_rate": args.sandbox_error_rate,
            "throttle_rate": args.sandbox_throttle_rate,
            "seed": args.sandbox_seed,
        }
    )
    return behaviour


def run(args: argparse.Namespace) -> int:
    """``cqrs payments-sandbox``: serve until SIGTERM/SIGINT, then exit 0 (1 when the port
    cannot be bound, 2 for a bad flag)."""
    try:
        behaviour = behaviour_from_args(args)
    except ValueError as exc:
        log.error("payments sandbox: %s", exc)
        return 2
    return int(
        runtime.run(
            _until_signalled(args.sandbox_host, args.sandbox_port, behaviour, args.sandbox_state)
        )
    )


async def _until_signalled(
    host: str, port: int, behaviour: Behaviour, state_path: str | None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.ensure_future(serve(host, port, behaviour, state_path))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if serving.done():  # it ended by itself: it could not start
        try:
            serving.result()
        except (OSError, ValueError) as exc:
            log.error("payments sandbox could not start: %s", exc)
            return 1
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    log.info("payments sandbox stopped")
    return 0
