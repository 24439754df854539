"""``cqrs payments-sandbox``: a local payment provider speaking the Stripe-shaped JSON API of
:class:`common.payments.HttpPaymentProvider`, for development and tests.

A real HTTP/1.1 server (asyncio streams; keep-alive, ``Content-Length`` bodies) that
behaves like the provider:

- ``POST /v1/charges`` ``{"amount", "currency", "metadata": {"order_id"}}`` -> 200 a charge
  (``ch_`` and 24 random characters), or 402 ``card_error``/``card_declined``;
- ``POST /v1/refunds`` ``{"charge", "amount"}`` -> 200 a refund (``re_...``); 404 for an
  unknown charge, 400 ``amount_too_large`` beyond what is left of the charge;
- ``Idempotency-Key``: the answer of a charge or refund (200 or 402) is stored under its key
  with a fingerprint of the request (method, path, JSON body); the same key and body replay it
  (same status and body, ``Idempotent-Replayed: true``), the same key with another body is 400
  ``idempotency_error``. Requests without a key are accepted and never de-duplicated;
  invalid requests (400/404) are not stored;
- read-only views: ``GET /v1/charges/{id}``, ``GET /v1/charges[?order_id=]``,
  ``GET /v1/refunds/{id}``, ``GET /v1/refunds[?charge=]`` (lists are ``{"object": "list",
  "data": [...]}``, newest first, as Stripe's);
- ``GET /_sandbox/stats`` ``{"requests", "charges", "refunds", "declines",
  "idempotent_replays", ...}``; ``GET``/``POST /_sandbox/behaviour`` (JSON, any subset of
  :class:`Behaviour`'s fields); ``GET /healthz``.

Faults (:class:`Behaviour`, set by flags at start or through ``POST /_sandbox/behaviour``)
apply to ``/v1/`` requests only, so the control endpoint always answers: ``latency_ms``
before anything, then ``throttle_rate`` (429 with ``Retry-After: 1``) and ``error_rate``
(500), both before any state change, then ``decline_rate`` (random per new charge, seeded by
``seed``) and ``decline_amounts`` (always decline these cent amounts: deterministic for
tests). ``down``: every ``/v1/`` request is read and its connection closed without an answer,
as a dead endpoint (state kept). ``errors_next``/``throttles_next`` fail the next N requests,
for tests that need it exactly.

State lives in memory; with ``--state PATH`` it is written to that JSON file after every
change and loaded at start, so a restarted sandbox keeps its charges, refunds and
idempotency keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import secrets
import signal
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

from common import runtime

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8095
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_ID_ALPHABET = string.ascii_letters + string.digits
_STATE_VERSION = 1

Json: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Json
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class Behaviour:
    """How the sandbox misbehaves; every field may be changed at run time."""

    decline_rate: float = 0.0  # 0..1: fraction of new charges declined at random
    decline_amounts: list[int] = field(default_factory=list)  # cent amounts always declined
    latency_ms: float = 0.0  # added before every /v1/ answer
    # Added to POSTs after they took effect, before the answer: a client that gives up (or
    # dies) meanwhile leaves a charge behind, which its retry with the same key must find.
    reply_delay_ms: float = 0.0
    error_rate: float = 0.0  # 0..1: fraction of /v1/ requests answered 500
    throttle_rate: float = 0.0  # 0..1: fraction of /v1/ requests answered 429
    down: bool = False  # /v1/ connections closed without an answer
    seed: int | None = None  # of the random draws (None: unpredictable)
    errors_next: int = 0  # the next N /v1/ requests answered 500
    throttles_next: int = 0  # the next N /v1/ requests answered 429

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``changes`` (field name -> JSON value) all or nothing; ValueError names
        the first bad one."""
        known = {f.name for f in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(sorted(known))}")
            checked[name] = _checked(name, value)
        for name, value in checked.items():
            setattr(self, name, value)

    def as_json(self) -> Json:
        """The fields as a JSON object."""
        return asdict(self)


def _checked(name: str, value: Any) -> Any:
    """``value`` as field ``name`` holds it, or ValueError."""

    def number() -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)

    def count() -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        return value

    if name.endswith("_rate"):
        rate = number()
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        return rate
    if name in ("latency_ms", "reply_delay_ms"):
        latency = number()
        if latency < 0 or math.isinf(latency):
            raise ValueError(f"{name} must be >= 0, got {value!r}")
        return latency
    if name == "down":
        if not isinstance(value, bool):
            raise ValueError(f"down must be true or false, got {value!r}")
        return value
    if name == "seed":
        return None if value is None else count()
    if name == "decline_amounts":
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise ValueError(f"decline_amounts must be a list of cent amounts, got {value!r}")
        return list(value)
    return count()  # errors_next, throttles_next


def _error(status: int, kind: str, message: str, **extra: Any) -> _Answer:
    """A Stripe-shaped error answer."""
    return _Answer(status, {"error": {"type": kind, "message": message, **extra}})


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _fingerprint(method: str, path: str, body: Json) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _is_amount(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class Sandbox:
    """The provider's state and behaviour, and its answers (the HTTP plumbing is
    :meth:`handle_connection`)."""

    def __init__(self, behaviour: Behaviour, state_path: Path | None = None) -> None:
        self.behaviour = behaviour
        self._random = random.Random(behaviour.seed)
        self._state_path = state_path
        self.charges: dict[str, Json] = {}
        self.refunds: dict[str, Json] = {}
        self._keys: dict[str, Json] = {}  # key -> {"fingerprint", "status", "body"}
        self._counts = dict.fromkeys(
            ("requests", "declines", "idempotent_replays", "errors", "throttled", "dropped"), 0
        )
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        if state_path is not None and state_path.exists():
            self._load(state_path)

    # -- persistence --------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            if data["version"] != _STATE_VERSION:
                raise ValueError(f"version {data['version']!r}, not {_STATE_VERSION}")
            self.charges = dict(data["charges"])
            self.refunds = dict(data["refunds"])
            self._keys = dict(data["keys"])
            self._counts["declines"] = int(data.get("declines", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a payments sandbox state: {exc!r}") from exc

    def _save(self) -> None:
        if self._state_path is None:
            return
        data = {
            "version": _STATE_VERSION,
            "charges": self.charges,
            "refunds": self.refunds,
            "keys": self._keys,
            "declines": self._counts["declines"],
        }
        # Written in the loop, on purpose: the file is small, and nothing else may run between
        # a change and its save (a sandbox killed right after answering keeps what it said).
        # Through a temporary file and a rename, so a kill mid-write leaves the old state.
        tmp = self._state_path.with_name(self._state_path.name + ".tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, self._state_path)

    # -- answers ------------------------------------------------------------------------

    def stats(self) -> Json:
        """Counters since start (``declines``, ``charges`` and ``refunds`` are the state's)."""
        counts = self._counts
        return {
            "requests": counts["requests"],
            "charges": len(self.charges),
            "refunds": len(self.refunds),
            "declines": counts["declines"],
            "idempotent_replays": counts["idempotent_replays"],
            "errors": counts["errors"],
            "throttled": counts["throttled"],
            "dropped": counts["dropped"],
        }

    def faulty(self) -> _Answer | None:
        """The 429 or 500 this /v1/ request gets instead of an answer, if any."""
        b = self.behaviour
        if b.throttles_next > 0 or (
            b.throttle_rate > 0 and self._random.random() < b.throttle_rate
        ):
            b.throttles_next = max(0, b.throttles_next - 1)
            self._counts["throttled"] += 1
            answer = _error(429, "rate_limit_error", "Too many requests (sandbox throttle_rate).")
            return _Answer(answer.status, answer.body, (("Retry-After", "1"),))
        if b.errors_next > 0 or (b.error_rate > 0 and self._random.random() < b.error_rate):
            b.errors_next = max(0, b.errors_next - 1)
            self._counts["errors"] += 1
            return _error(500, "api_error", "Something went wrong (sandbox error_rate).")
        return None

    def answer(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Answer:
        """The answer to one request that is not dropped or faulted."""
        parts = urlsplit(target)
        path, query = parts.path.rstrip("/") or "/", parse_qs(parts.query)
        if path == "/healthz":
            return _Answer(200, {"status": "ok", "down": self.behaviour.down})
        if path == "/_sandbox/stats" and method == "GET":
            return _Answer(200, self.stats())
        if path == "/_sandbox/behaviour" and method in ("GET", "POST"):
            return self._control(method, raw)
        if method == "POST" and path in ("/v1/charges", "/v1/refunds"):
            return self._post(path, headers, raw)
        if method == "GET":
            if path == "/v1/charges":
                return self._list(self.charges, "order_id", query, lambda c: c["metadata"])
            if path == "/v1/refunds":
                return self._list(self.refunds, "charge", query, lambda r: r)
            for prefix, objects, kind in (
                ("/v1/charges/", self.charges, "charge"),
                ("/v1/refunds/", self.refunds, "refund"),
            ):
                if path.startswith(prefix):
                    found = objects.get(path.removeprefix(prefix))
                    if found is None:
                        return _error(
                            404,
                            "invalid_request_error",
                            f"No such {kind}: '{path.removeprefix(prefix)}'",
                            code="resource_missing",
                        )
                    return _Answer(200, found)
        return _error(
            404, "invalid_request_error", f"Unrecognized request URL ({method}: {parts.path})."
        )

    def _control(self, method: str, raw: bytes) -> _Answer:
        if method == "POST":
            try:
                changes = json.loads(raw or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object")
                self.behaviour.update(changes)
            except ValueError as exc:
                return _error(400, "invalid_request_error", str(exc))
            if "seed" in changes:
                self._random.seed(self.behaviour.seed)
            log.info("behaviour: %s", json.dumps(self.behaviour.as_json()))
        return _Answer(200, self.behaviour.as_json())

    def _list(
        self,
        objects: dict[str, Json],
        name: str,
        query: Mapping[str, list[str]],
        where: Callable[[Json], Json],
    ) -> _Answer:
        values = query.get(name)
        wanted = values[0] if values else None
        newest_first = reversed(list(objects.values()))
        data = [o for o in newest_first if wanted is None or where(o).get(name) == wanted]
        return _Answer(200, {"object": "list", "data": data, "has_more": False})

    def _post(self, path: str, headers: Mapping[str, str], raw: bytes) -> _Answer:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "The request body must be a JSON object.")
        invalid = self._invalid_charge(body) if path == "/v1/charges" else None
        if invalid is not None:
            return invalid
        key = headers.get("idempotency-key")
        fingerprint = _fingerprint("POST", path, body)
        if key is not None and (stored := self._keys.get(key)) is not None:
            if stored["fingerprint"] != fingerprint:
                return _error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with (key '{key}').",
                )
            self._counts["idempotent_replays"] += 1
            return _Answer(stored["status"], stored["body"], (("Idempotent-Replayed", "true"),))
        answer = self._charge(body) if path == "/v1/charges" else self._refund(body)
        # What the endpoint did (a charge, a refund, a decline) is stored; a request it
        # refused (400/404) changed nothing, so its key stays free.
        if key is not None and answer.status in (200, 402):
            self._keys[key] = {
                "fingerprint": fingerprint,
                "status": answer.status,
                "body": answer.body,
            }
        if answer.status in (200, 402):
            self._save()
        return answer

    @staticmethod
    def _invalid_charge(body: Json) -> _Answer | None:
        amount, currency = body.get("amount"), body.get("currency")
        metadata = body.get("metadata", {})
        if not _is_amount(amount):
            return _error(
                400,
                "invalid_request_error",
                f"amount must be a positive integer, got {amount!r}",
                code="parameter_invalid_integer",
                param="amount",
            )
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            return _error(
                400,
                "invalid_request_error",
                f"Invalid currency: {currency!r}",
                code="parameter_invalid",
                param="currency",
            )
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            return _error(
                400,
                "invalid_request_error",
                "metadata must be an object of strings",
                code="parameter_invalid",
                param="metadata",
            )
        return None

    def _charge(self, body: Json) -> _Answer:
        amount: int = body["amount"]
        b = self.behaviour
        if amount in b.decline_amounts or (
            b.decline_rate > 0 and self._random.random() < b.decline_rate
        ):
            self._counts["declines"] += 1
            return _error(
                402,
                "card_error",
                "Your card was declined.",
                code="card_declined",
                decline_code="generic_decline",
            )
        charge = {
            "id": _new_id("ch_"),
            "object": "charge",
            "amount": amount,
            "amount_refunded": 0,
            "currency": body["currency"].lower(),
            "status": "succeeded",
            "paid": True,
            "refunded": False,
            "metadata": dict(body.get("metadata", {})),
            "created": int(time.time()),
        }
        self.charges[charge["id"]] = charge
        return _Answer(200, dict(charge))  # a copy: later refunds change the stored one

    def _refund(self, body: Json) -> _Answer:
        charge_id, amount = body.get("charge"), body.get("amount")
        if not isinstance(charge_id, str):
            return _error(
                400,
                "invalid_request_error",
                "Missing required param: charge.",
                code="parameter_missing",
                param="charge",
            )
        charge = self.charges.get(charge_id)
        if charge is None:
            return _error(
                404,
                "invalid_request_error",
                f"No such charge: '{charge_id}'",
                code="resource_missing",
                param="charge",
            )
        left = charge["amount"] - charge["amount_refunded"]
        if amount is None:
            amount = left  # as Stripe: no amount refunds what is left
        if not _is_amount(amount):
            return _error(
                400,
                "invalid_request_error",
                f"amount must be a positive integer, got {amount!r}",
                code="charge_already_refunded" if left == 0 else "parameter_invalid_integer",
                param="amount",
            )
        if amount > left:
            return _error(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                code="amount_too_large",
                param="amount",
            )
        refund = {
            "id": _new_id("re_"),
            "object": "refund",
            "charge": charge_id,
            "amount": amount,
            "currency": charge["currency"],
            "status": "succeeded",
            "created": int(time.time()),
        }
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        return _Answer(200, refund)

    # -- HTTP ---------------------------------------------------------------------------

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one connection: requests one after another while it is kept alive."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent a head too large
        except ValueError:
            pass  # an unparseable request: nothing sensible to answer
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read and answer one request; False when the connection is to end."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise
            return False  # closed between requests
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        tokens = headers.get("connection", "").lower()
        keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        if "transfer-encoding" in headers:
            await self._write(writer, _error(411, "invalid_request_error", "Send Content-Length."))
            return False
        length = int(headers.get("content-length", "0") or 0)
        if length < 0 or length > _MAX_BODY:
            await self._write(writer, _error(413, "invalid_request_error", "Body too large."))
            return False
        if length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(length)
        api = target.startswith("/v1/") or target.startswith("/v1?")
        if api:
            self._counts["requests"] += 1
            if self.behaviour.down:
                self._counts["dropped"] += 1
                return False  # a dead endpoint: no answer at all
            if self.behaviour.latency_ms > 0:
                await asyncio.sleep(self.behaviour.latency_ms / 1000)
        answer = (self.faulty() if api else None) or self.answer(method, target, headers, body)
        if api:
            log.debug("%s %s -> %d", method, target, answer.status)
            if self.behaviour.reply_delay_ms > 0 and method == "POST":
                await asyncio.sleep(self.behaviour.reply_delay_ms / 1000)
        echo = headers.get("idempotency-key")
        extra = (("Idempotency-Key", echo),) if echo is not None and api else ()
        await self._write(writer, answer, extra, keep_alive=keep_alive)
        return keep_alive

    @staticmethod
    async def _write(
        writer: asyncio.StreamWriter,
        answer: _Answer,
        extra: tuple[tuple[str, str], ...] = (),
        *,
        keep_alive: bool = False,
    ) -> None:
        payload = json.dumps(answer.body, indent=2).encode() + b"\n"
        try:
            reason = HTTPStatus(answer.status).phrase
        except ValueError:
            reason = "Status"
        lines = [
            f"HTTP/1.1 {answer.status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            f"Request-Id: req_{secrets.token_hex(8)}",
            *(f"{k}: {v}" for k, v in (*answer.headers, *extra)),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()

    async def close(self) -> None:
        """Drop every connection (in-flight requests included)."""
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


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
    server = await asyncio.start_server(sandbox.handle_connection, host, port, limit=_MAX_HEAD)
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
        await sandbox.close()
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cqrs.payments_sandbox [flags]``: the same as ``cqrs payments-sandbox``
    (whose flags are defined in cqrs/cli.py, once)."""
    import sys

    from cqrs.cli import main as cli_main

    return cli_main(["payments-sandbox", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
