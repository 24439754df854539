"""The sandbox provider: charges, refunds, idempotency keys and the faults it plays."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sandbox._model import Answer, Behaviour, Json, error, is_amount, new_id
from sandbox._model import fingerprint as request_fingerprint

log = logging.getLogger(__name__)

_STATE_VERSION = 1


class Sandbox:
    """The provider's state and behaviour, and its answers (the HTTP plumbing is
    :class:`sandbox._http.HttpFront`)."""

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

    def faulty(self) -> Answer | None:
        """The 429 or 500 this /v1/ request gets instead of an answer, if any."""
        b = self.behaviour
        if b.throttles_next > 0 or (
            b.throttle_rate > 0 and self._random.random() < b.throttle_rate
        ):
            b.throttles_next = max(0, b.throttles_next - 1)
            self._counts["throttled"] += 1
            answer = error(429, "rate_limit_error", "Too many requests (sandbox throttle_rate).")
            return Answer(answer.status, answer.body, (("Retry-After", "1"),))
        if b.errors_next > 0 or (b.error_rate > 0 and self._random.random() < b.error_rate):
            b.errors_next = max(0, b.errors_next - 1)
            self._counts["errors"] += 1
            return error(500, "api_error", "Something went wrong (sandbox error_rate).")
        return None

    def answer(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> Answer:
        """The answer to one request that is not dropped or faulted."""
        parts = urlsplit(target)
        path, query = parts.path.rstrip("/") or "/", parse_qs(parts.query)
        if path == "/healthz":
            return Answer(200, {"status": "ok", "down": self.behaviour.down})
        if path == "/_sandbox/stats" and method == "GET":
            return Answer(200, self.stats())
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
                        return error(
                            404,
                            "invalid_request_error",
                            f"No such {kind}: '{path.removeprefix(prefix)}'",
                            code="resource_missing",
                        )
                    return Answer(200, found)
        return error(
            404, "invalid_request_error", f"Unrecognized request URL ({method}: {parts.path})."
        )

    def _control(self, method: str, raw: bytes) -> Answer:
        if method == "POST":
            try:
                changes = json.loads(raw or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object")
                self.behaviour.update(changes)
            except ValueError as exc:
                return error(400, "invalid_request_error", str(exc))
            if "seed" in changes:
                self._random.seed(self.behaviour.seed)
            log.info("behaviour: %s", json.dumps(self.behaviour.as_json()))
        return Answer(200, self.behaviour.as_json())

    def _list(
        self,
        objects: dict[str, Json],
        name: str,
        query: Mapping[str, list[str]],
        where: Callable[[Json], Json],
    ) -> Answer:
        values = query.get(name)
        wanted = values[0] if values else None
        newest_first = reversed(list(objects.values()))
        data = [o for o in newest_first if wanted is None or where(o).get(name) == wanted]
        return Answer(200, {"object": "list", "data": data, "has_more": False})

    def _post(self, path: str, headers: Mapping[str, str], raw: bytes) -> Answer:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, "invalid_request_error", "The request body must be a JSON object.")
        invalid = self._invalid_charge(body) if path == "/v1/charges" else None
        if invalid is not None:
            return invalid
        key = headers.get("idempotency-key")
        fingerprint = request_fingerprint("POST", path, body)
        if key is not None and (stored := self._keys.get(key)) is not None:
            if stored["fingerprint"] != fingerprint:
                return error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with (key '{key}').",
                )
            self._counts["idempotent_replays"] += 1
            return Answer(stored["status"], stored["body"], (("Idempotent-Replayed", "true"),))
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
    def _invalid_charge(body: Json) -> Answer | None:
        amount, currency = body.get("amount"), body.get("currency")
        metadata = body.get("metadata", {})
        if not is_amount(amount):
            return error(
                400,
                "invalid_request_error",
                f"amount must be a positive integer, got {amount!r}",
                code="parameter_invalid_integer",
                param="amount",
            )
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            return error(
                400,
                "invalid_request_error",
                f"Invalid currency: {currency!r}",
                code="parameter_invalid",
                param="currency",
            )
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            return error(
                400,
                "invalid_request_error",
                "metadata must be an object of strings",
                code="parameter_invalid",
                param="metadata",
            )
        return None

    def _charge(self, body: Json) -> Answer:
        amount: int = body["amount"]
        b = self.behaviour
        if amount in b.decline_amounts or (
            b.decline_rate > 0 and self._random.random() < b.decline_rate
        ):
            self._counts["declines"] += 1
            return error(
                402,
                "card_error",
                "Your card was declined.",
                code="card_declined",
                decline_code="generic_decline",
            )
        charge = {
            "id": new_id("ch_"),
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
        return Answer(200, dict(charge))  # a copy: later refunds change the stored one

    def _refund(self, body: Json) -> Answer:
        charge_id, amount = body.get("charge"), body.get("amount")
        if not isinstance(charge_id, str):
            return error(
                400,
                "invalid_request_error",
                "Missing required param: charge.",
                code="parameter_missing",
                param="charge",
            )
        charge = self.charges.get(charge_id)
        if charge is None:
            return error(
                404,
                "invalid_request_error",
                f"No such charge: '{charge_id}'",
                code="resource_missing",
                param="charge",
            )
        left = charge["amount"] - charge["amount_refunded"]
        if amount is None:
            amount = left  # as Stripe: no amount refunds what is left
        if not is_amount(amount):
            return error(
                400,
                "invalid_request_error",
                f"amount must be a positive integer, got {amount!r}",
                code="charge_already_refunded" if left == 0 else "parameter_invalid_integer",
                param="amount",
            )
        if amount > left:
            return error(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                code="amount_too_large",
                param="amount",
            )
        refund = {
            "id": new_id("re_"),
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
        return Answer(200, refund)

    def count(self, name: str) -> None:
        """Count one more of ``requests`` or ``dropped`` (the HTTP front's counters)."""
        self._counts[name] += 1
