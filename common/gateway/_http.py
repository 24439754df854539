"""URL and header helpers: the host key and Retry-After."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime

import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: str | httpx.URL) -> str:
    """``host:port`` (lower-case, default port filled in) of an http(s) URL: the unit of the
    breaker, the limits and the metric labels. ValueError for anything else."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid URL {str(url)!r}: {exc}") from None
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise ValueError(f"not an http(s) URL with a host: {str(url)!r}")
    host = parsed.host.lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parsed.port or _DEFAULT_PORTS[parsed.scheme]}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` value (delta-seconds or an HTTP-date) asks to wait; None
    when absent or unreadable (then the ordinary back-off applies)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
