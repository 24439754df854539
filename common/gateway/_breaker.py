"""One circuit breaker per host: purgatory's state machine, plus a single half-open probe.

purgatory counts consecutive failures, opens at the threshold and half-opens after the ttl,
but lets every request through while half-open and only notices the ttl when a request comes.
This wrapper admits one probe at a time while half-open (the others get CircuitOpen), ignores
the late results of attempts that began before the breaker last opened (a stale success must
not close it), and keeps the state gauge current, the ttl expiry included.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from purgatory.domain.model import HALF_OPENED, OPENED, Context, OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

from common.gateway._metrics import BREAKER_STATE, BREAKER_VALUES
from common.gateway.errors import CircuitOpen

# purgatory compares wall-clock time strictly; wake the gauge a little after the ttl.
_WAKE_SLACK_S = 0.01


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted attempt: the breaker generation it began in, and whether it probes."""

    epoch: int
    probe: bool


class HostBreaker:
    """The breaker of one host (``host:port``)."""

    def __init__(self, host: str, breaker: AsyncCircuitBreaker, ttl_s: float) -> None:
        self._host = host
        self._breaker = breaker
        self._ttl_s = ttl_s
        self._probing = False
        # Bumped each time the breaker opens; results from an older generation are ignored.
        self._epoch = 0
        self._wake: asyncio.TimerHandle | None = None
        self._publish()

    @property
    def _context(self) -> Context:
        return self._breaker.context

    def _reopens_at(self) -> float | None:
        """Wall-clock time (purgatory's clock) an open breaker half-opens."""
        if self._context.state != OPENED or self._context.opened_at is None:
            return None
        return self._context.opened_at + self._ttl_s

    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (the ttl passed, even before a call came)."""
        state = self._context.state
        if state == OPENED:
            reopens_at = self._reopens_at()
            return "open" if reopens_at is not None and time.time() <= reopens_at else "half-open"
        return "half-open" if state == HALF_OPENED else "closed"

    def open_until(self) -> float | None:
        """Monotonic time the breaker half-opens, or None when it is not open."""
        reopens_at = self._reopens_at()
        if reopens_at is None or time.time() > reopens_at:
            return None
        return time.monotonic() + (reopens_at - time.time())

    def check(self) -> None:
        """Raise CircuitOpen when an attempt would not be admitted now (reserves nothing)."""
        state = self.state()
        if state == "open":
            until = self.open_until()
            raise CircuitOpen(self._host, max(0.0, (until or 0.0) - time.monotonic()))
        if state == "half-open" and self._probing:
            # The probe decides within its timeout; a caller may try again after that.
            raise CircuitOpen(self._host, min(self._ttl_s, 1.0))

    async def admit(self) -> Ticket:
        """Admit one attempt (the probe, when half-open) or raise CircuitOpen."""
        self.check()
        try:
            self._context.handle_new_request()
        except OpenedState:  # raced past the check: still open
            self.check()
            raise CircuitOpen(self._host, self._ttl_s) from None
        probe = self._context.state == HALF_OPENED
        if probe:
            self._probing = True
        await self._drain()
        return Ticket(self._epoch, probe)

    def abandon(self, ticket: Ticket) -> None:
        """The attempt ended without saying anything about the host (cancelled, or our own
        pool was full): count nothing, free the probe slot."""
        if ticket.probe:
            self._probing = False

    async def report(self, ticket: Ticket, failure: Exception | None) -> None:
        """Record an attempt's result: ``failure`` None for a success (the host answered)."""
        if ticket.probe:
            self._probing = False
        if ticket.epoch != self._epoch:
            return
        was_open = self._context.state == OPENED
        if failure is None:
            self._context.handle_end_request()
        else:
            self._context.handle_exception(failure)
        if self._context.state == OPENED and not was_open:
            self._epoch += 1
            self._schedule_wake()
        await self._drain()
        self._publish()

    def close(self) -> None:
        """Cancel the gauge timer (the gateway is closing)."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None

    async def _drain(self) -> None:
        """Hand purgatory's state-change messages to its bus (its repository of states)."""
        while self._context.messages:
            await self._breaker.messagebus.handle(self._context.messages.pop(0), self._breaker.uow)

    def _schedule_wake(self) -> None:
        self.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - report() always runs in a loop
            return
        self._wake = loop.call_later(self._ttl_s + _WAKE_SLACK_S, self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        if self.state() == "open":  # clocks disagreed by a hair: look again soon
            self._wake = asyncio.get_running_loop().call_later(_WAKE_SLACK_S, self._on_wake)
        self._publish()

    def _publish(self) -> None:
        BREAKER_STATE.labels(self._host).set(BREAKER_VALUES[self.state()])
