"""What a gateway call raises when it does not return a response.

Every error names the host (``host:port``) it is about and says, in ``retryable``, whether
the same call may succeed later (a dispatcher reschedules those and gives up on the rest).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every gateway error; ``host`` is the ``host:port`` the call was for."""

    retryable: bool = False

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message)
        self.host = host


class CircuitOpen(GatewayError):
    """The host's breaker is open (or half-open with its probe in flight): nothing was sent."""

    retryable = True

    def __init__(self, host: str, retry_in_s: float) -> None:
        super().__init__(
            host, f"circuit open for {host}: not calling it, retry in {retry_in_s:.1f} s"
        )
        self.retry_in_s = retry_in_s


class RetriesExhausted(GatewayError):
    """Every attempt failed with a retryable failure; the last one is described."""

    retryable = True

    def __init__(
        self,
        host: str,
        attempts: int,
        last_status: int | None,
        last_error: str,
        *,
        outcome: str | None = None,
    ) -> None:
        what = f"HTTP {last_status}" if last_status is not None else last_error
        super().__init__(host, f"{host} failed {attempts} attempt(s), last: {what}")
        self.attempts = attempts
        self.last_status = last_status
        self.last_error = last_error
        # The cqrs_gateway_calls_total outcome: server_error for a status, else what the
        # transport failure was (timeout, connect_error, transport_error).
        self.outcome = outcome or ("server_error" if last_status is not None else "transport_error")


class RetryLater(GatewayError):
    """The host asked (429/503 with Retry-After) for a pause longer than the call may wait."""

    retryable = True

    def __init__(self, host: str, after_s: float, status: int) -> None:
        super().__init__(host, f"{host} answered HTTP {status}: retry after {after_s:.0f} s")
        self.after_s = after_s
        self.status = status


class RateLimited(GatewayError):
    """The call's timeout passed while waiting for a slot (``limit``: ``rate`` or
    ``concurrency`` of the host, or ``pool``, the gateway's connections over all hosts);
    nothing was sent. It says nothing about the request or the host: a caller postpones
    the call and does not count it as a failed attempt."""

    retryable = True

    def __init__(self, host: str, waited_s: float, limit: str = "rate") -> None:
        super().__init__(host, f"{host}: no {limit} slot within {waited_s:.2f} s")
        self.waited_s = waited_s
        self.limit = limit


class Refused(GatewayError):
    """The gateway would not send the request, and sent nothing: its URL cannot be sent to,
    the lookup of its host failed, or the host resolved to an address the gateway's address
    policy refuses (``reason`` says which). ``retryable`` only for a failed lookup (name
    service may recover); a refused address or URL would be refused again."""

    def __init__(self, host: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(host, f"refused: {reason}")
        self.reason = reason
        self.retryable = retryable
