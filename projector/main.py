"""Entry points called by ``cqrs projector run|rebuild|verify|status`` (see cqrs/cli.py)."""

from __future__ import annotations

import asyncio
import logging
import signal

from common.metrics import start_metrics_server
from common.settings import Settings
from projector import rebuild as rebuilding
from projector import status as statusing
from projector import verify as verifying
from projector.bootstrap import open_app
from projector.runner import Outcome

log = logging.getLogger(__name__)

_STOP_GRACE_S = 10.0


async def run(settings: Settings, only: list[str] | None = None) -> int:
    """Run every consumer (or those named in ``only``) until SIGTERM/SIGINT (current
    batches finish first).

    Returns the exit status: 0 after a signal, 1 when every consumer stopped on a
    poison event (so a supervisor sees the failure).
    """
    start_metrics_server(settings.projector_metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_app(settings) as app:
            task = asyncio.create_task(app.projector(only).run(stop))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not task.done():
                log.info("stopping: letting current batches finish")
                _, pending = await asyncio.wait({task}, timeout=_STOP_GRACE_S)
                if pending:
                    task.cancel()
            outcomes = (await asyncio.gather(task, return_exceptions=True))[0]
            if isinstance(outcomes, dict) and not stop.is_set():
                failed = [name for name, o in outcomes.items() if o is Outcome.FAILED]
                log.error("every projection stopped on a failure: %s", ", ".join(failed))
                return 1
            return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def rebuild(settings: Settings, only: list[str] | None) -> int:
    """Rebuild the consumers of the families in ``only`` (default: all)."""
    async with open_app(settings) as app:
        return await rebuilding.rebuild(
            app.select(only), app.pool, batch_size=settings.projector_batch_size
        )


async def verify(settings: Settings) -> int:
    """0 when every projection equals the write model, else the number of differences
    (capped at 255 for the exit status' sake, never 0)."""
    async with open_app(settings) as app:
        differences = await verifying.verify(app.consumers, app.pool)
    return min(differences, 255)


async def status(settings: Settings) -> int:
    """Print checkpoints, lag and failures; 1 if a projection is stopped on a failure."""
    async with open_app(settings) as app:
        return await statusing.status(app.consumers, app.pool, app.failures)
