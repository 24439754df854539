"""Folding a batch of events into changes of the analytics tables (pure; no I/O).

An order *counts* from ``OrderPlaced`` until ``OrderCancelled`` or ``OrderDeleted``.
Counting and uncounting an order add and subtract the same contribution, so every
figure that is a sum (orders, amounts, units) is kept as a delta. Its *payment* counts
(for its customer, in its currency) from ``PaymentCaptured`` until ``PaymentRefunded`` or
``OrderDeleted``, cancelled or not: the same rule of deltas, with the captured amount kept
in the order's facts (``paid_cents``) to be taken out again. A capture of an order whose
payment already counts, or that is deleted, and a refund of one whose payment does not
count change nothing (the write side never emits them; like a repeated cancellation).
Figures that are not sums are kept by rule:

- ``first_order_at``/``last_order_at`` and ``last_sold_at``: extended on every new
  order; when an order that set one stops counting, the store recomputes it for
  that customer or product from the ``analytics.orders`` facts (an indexed lookup).
- new and returning customers per month: a customer counts as *new* in the month of
  its first counting order and as *returning* in every later month it ordered in.
  Each affected customer's contribution before and after the batch is compared,
  which also moves a customer whose first order was cancelled to its next month.

The store loads what the fold needs (:class:`Loaded`), calls :func:`fold`, writes the
returned :class:`Changes` and then, with the recomputed times, :func:`month_deltas`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from common import events as ev
from common.events import StoredEvent

CANCELLED = "CANCELLED"
_STATUS_EVENTS = {
    ev.ORDER_CONFIRMED: "CONFIRMED",
    ev.ORDER_SHIPPED: "SHIPPED",
    ev.ORDER_DELIVERED: "DELIVERED",
    ev.ORDER_CANCELLED: CANCELLED,
}
# The events the fold reads; the log reader skips every other one (stock movements,
# renames: most of the log; PaymentRequested, PaymentFailed and RefundRequested, which
# leave a payment as it was) in SQL.
EVENT_TYPES = (
    ev.PRODUCT_CREATED, ev.PRODUCT_DELETED, ev.CUSTOMER_CREATED, ev.CUSTOMER_DELETED,
    ev.ORDER_PLACED, *_STATUS_EVENTS, ev.ORDER_DELETED, ev.PAYMENT_CAPTURED,
    ev.PAYMENT_REFUNDED,
)  # fmt: skip

Month = date
MonthKey = tuple[Month, str]  # (month, currency)


class AnalyticsError(Exception):
    """An event the analytics cannot apply (a poison event)."""

    def __init__(self, event: StoredEvent, reason: str) -> None:
        super().__init__(f"{event.event_type} seq={event.seq} {event.aggregate_id}: {reason}")
        self.event = event


def month_of(moment: datetime) -> Month:
    """The UTC calendar month of an aware ``moment`` (as its first day)."""
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


@dataclass(frozen=True, slots=True)
class Line:
    product_id: str
    quantity: int
    line_total_cents: int


@dataclass(slots=True)
class OrderFact:
    """What one order contributes, and whether it counts now."""

    order_id: str
    customer_id: str
    currency: str
    total_cents: int
    created_at: datetime
    status: str
    deleted: bool
    lines: list[Line]
    # The captured amount while the payment is CAPTURED (not refunded); None otherwise.
    paid_cents: int | None = None

    @property
    def counts(self) -> bool:
        return not self.deleted and self.status != CANCELLED

    @property
    def paid(self) -> bool:
        """Whether its payment counts (captured, not refunded, the order not deleted)."""
        return not self.deleted and self.paid_cents is not None

    @property
    def cancelled_and_kept(self) -> bool:
        return not self.deleted and self.status == CANCELLED


@dataclass(frozen=True, slots=True)
class CustomerTimes:
    first_order_at: datetime | None
    last_order_at: datetime | None


@dataclass(slots=True)
class Loaded:
    """What a batch needs besides its events: the facts of the orders it places
    (:func:`placed_orders`, each payload parsed once) and of those it refers to (placed
    earlier, read by the store), and the customers' stored first/last order times and
    the products' last sale (only for those whose counting orders change)."""

    orders: dict[str, OrderFact]
    customer_times: dict[str, CustomerTimes] = field(default_factory=dict)
    last_sold: dict[str, datetime | None] = field(default_factory=dict)
    placed: dict[str, OrderFact] = field(default_factory=dict)


@dataclass(slots=True)
class Changes:
    """What a batch changes; every ``*_delta`` map holds amounts to add."""

    orders: dict[str, OrderFact] = field(default_factory=dict)  # facts to upsert
    new_orders: set[str] = field(default_factory=set)  # whose lines to insert
    products_created: set[str] = field(default_factory=set)
    products_deleted: set[str] = field(default_factory=set)
    customers_created: set[str] = field(default_factory=set)
    customers_deleted: set[str] = field(default_factory=set)
    # customer -> [total_orders, cancelled_orders]
    customer_delta: dict[str, list[int]] = field(default_factory=lambda: defaultdict(_two))
    # (customer, currency) -> [orders, value_cents]
    customer_currency_delta: dict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(_two)
    )
    # (customer, currency) -> [payments, paid_cents]; the customer's total_payments is
    # the sum of its payments over currencies
    payment_delta: dict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(_two)
    )
    # product -> [units_sold, orders_count]
    product_delta: dict[str, list[int]] = field(default_factory=lambda: defaultdict(_two))
    # (product, currency) -> [units_sold, orders_count, revenue_cents]
    product_currency_delta: dict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(_three)
    )
    product_customer_delta: dict[tuple[str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    # (customer, month, currency) -> orders
    customer_month_delta: dict[tuple[str, Month, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    # (month, currency) -> [orders, revenue_cents]
    month_delta: dict[MonthKey, list[int]] = field(default_factory=lambda: defaultdict(_two))
    # customer -> first/last after the batch, when only new orders moved them
    customer_times: dict[str, CustomerTimes] = field(default_factory=dict)
    recompute_customers: set[str] = field(default_factory=set)
    last_sold: dict[str, datetime] = field(default_factory=dict)  # only ever later
    recompute_products: set[str] = field(default_factory=set)


def _two() -> list[int]:
    return [0, 0]


def _three() -> list[int]:
    return [0, 0, 0]


def placed_orders(events: Iterable[StoredEvent]) -> dict[str, OrderFact]:
    """The facts of the orders the batch places; :class:`AnalyticsError` for a payload
    that is not an order."""
    return {e.aggregate_id: _placed(e) for e in events if e.event_type == ev.ORDER_PLACED}


def referenced_orders(events: Iterable[StoredEvent], placed: Mapping[str, OrderFact]) -> set[str]:
    """Orders the batch changes that it does not place (their facts must be loaded)."""
    return {
        e.aggregate_id
        for e in events
        if e.aggregate_type == ev.ORDER and e.aggregate_id not in placed
    }


def fold(events: Iterable[StoredEvent], loaded: Loaded) -> Changes:
    """The changes ``events`` make, given the facts in ``loaded``.

    ``loaded.placed`` must hold the batch's :func:`placed_orders`, and
    ``loaded.customer_times``/``last_sold`` every customer and product whose
    counting orders the batch changes (see :func:`affected`); the fold extends them for
    new orders and marks for recomputation those an uncounted order may have set.
    Raises :class:`AnalyticsError` for an event it cannot apply.
    """
    return _Folder(loaded).run(events)


def affected(orders: Iterable[OrderFact]) -> Affected:
    """The customers and products whose counting orders a batch may change: those of the
    orders it places or refers to."""
    customers: set[str] = set()
    products: set[str] = set()
    for fact in orders:
        customers.add(fact.customer_id)
        products.update(line.product_id for line in fact.lines)
    return Affected(customers, products)


@dataclass(frozen=True, slots=True)
class Affected:
    customers: set[str]
    products: set[str]


class _Folder:
    def __init__(self, loaded: Loaded) -> None:
        self.changes = Changes()
        self.orders = dict(loaded.orders)
        self.times = dict(loaded.customer_times)
        self.last_sold = dict(loaded.last_sold)
        self.placed = loaded.placed

    def run(self, events: Iterable[StoredEvent]) -> Changes:
        changes = self.changes
        for e in events:
            kind = e.event_type
            if kind == ev.PRODUCT_CREATED:
                changes.products_created.add(e.aggregate_id)
            elif kind == ev.PRODUCT_DELETED:
                changes.products_deleted.add(e.aggregate_id)
            elif kind == ev.CUSTOMER_CREATED:
                changes.customers_created.add(e.aggregate_id)
            elif kind == ev.CUSTOMER_DELETED:
                changes.customers_deleted.add(e.aggregate_id)
            elif e.aggregate_type == ev.ORDER:
                fact = self._order_event(e)
                changes.orders[fact.order_id] = fact
        changes.customer_times = {
            c: t for c, t in self.times.items() if c not in changes.recompute_customers
        }
        changes.last_sold = {
            p: t
            for p, t in self.last_sold.items()
            if t is not None and p not in changes.recompute_products
        }
        return changes

    def _order_event(self, e: StoredEvent) -> OrderFact:
        changes = self.changes
        kind = e.event_type
        if kind == ev.ORDER_PLACED:
            if e.aggregate_id in self.orders:
                raise AnalyticsError(e, "order placed twice")
            fact = self.placed[e.aggregate_id]
            self.orders[fact.order_id] = fact
            changes.new_orders.add(fact.order_id)
            self._count(fact, +1)
            return fact
        found = self.orders.get(e.aggregate_id)
        if found is None:
            raise AnalyticsError(e, "no OrderPlaced before it")
        if kind in _STATUS_EVENTS:
            status = _STATUS_EVENTS[kind]
            if status == CANCELLED and found.counts:
                self._count(found, -1)
                changes.customer_delta[found.customer_id][1] += 1
            found.status = status
        elif kind == ev.ORDER_DELETED:
            if found.counts:
                self._count(found, -1)
            elif found.cancelled_and_kept:
                changes.customer_delta[found.customer_id][1] -= 1
            if found.paid:
                self._pay(found, -1)
            found.deleted = True
        elif kind == ev.PAYMENT_CAPTURED:
            amount = _captured(e)
            if not found.deleted and found.paid_cents is None:
                found.paid_cents = amount
                self._pay(found, +1)
        elif kind == ev.PAYMENT_REFUNDED:
            if found.paid:
                self._pay(found, -1)
            found.paid_cents = None
        else:
            raise AnalyticsError(e, "not an Order event")
        return found

    def _count(self, fact: OrderFact, sign: int) -> None:
        """Add (``sign`` +1) or remove (-1) a counting order's share of every figure."""
        changes = self.changes
        c, cur, total = fact.customer_id, fact.currency, fact.total_cents
        month = month_of(fact.created_at)
        changes.customer_delta[c][0] += sign
        cc = changes.customer_currency_delta[(c, cur)]
        cc[0] += sign
        cc[1] += sign * total
        changes.customer_month_delta[(c, month, cur)] += sign
        m = changes.month_delta[(month, cur)]
        m[0] += sign
        m[1] += sign * total
        per_product: dict[str, list[int]] = {}
        for line in fact.lines:
            units_revenue = per_product.setdefault(line.product_id, [0, 0])
            units_revenue[0] += line.quantity
            units_revenue[1] += line.line_total_cents
        for product, (units, revenue) in per_product.items():
            pd = changes.product_delta[product]
            pd[0] += sign * units
            pd[1] += sign
            pc = changes.product_currency_delta[(product, cur)]
            pc[0] += sign * units
            pc[1] += sign
            pc[2] += sign * revenue
            changes.product_customer_delta[(product, c)] += sign * units
            self._sold(product, fact.created_at, sign)
        self._ordered(c, fact.created_at, sign)

    def _pay(self, fact: OrderFact, sign: int) -> None:
        """Add (+1) or remove (-1) an order's counted payment."""
        assert fact.paid_cents is not None
        pd = self.changes.payment_delta[(fact.customer_id, fact.currency)]
        pd[0] += sign
        pd[1] += sign * fact.paid_cents

    def _ordered(self, customer: str, at: datetime, sign: int) -> None:
        times = self.times.get(customer, CustomerTimes(None, None))
        if sign > 0:
            first, last = times.first_order_at, times.last_order_at
            self.times[customer] = CustomerTimes(
                at if first is None else min(first, at), at if last is None else max(last, at)
            )
        elif at in (times.first_order_at, times.last_order_at):
            self.changes.recompute_customers.add(customer)

    def _sold(self, product: str, at: datetime, sign: int) -> None:
        last = self.last_sold.get(product)
        if sign > 0:
            self.last_sold[product] = at if last is None else max(last, at)
        elif at == last:
            self.changes.recompute_products.add(product)


def _placed(e: StoredEvent) -> OrderFact:
    p = e.payload
    try:
        customer = p["customer"]
        lines = [
            Line(str(i["product_id"]), int(i["quantity"]), int(i["line_total_cents"]))
            for i in p["items"]
        ]
        return OrderFact(
            order_id=e.aggregate_id,
            customer_id=str(customer["id"]),
            currency=str(p["currency"]),
            total_cents=int(p["total_cents"]),
            created_at=e.occurred_at,
            status=str(p["status"]),
            deleted=False,
            lines=lines,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AnalyticsError(e, f"bad payload: {type(exc).__name__}: {exc}") from exc


def _captured(e: StoredEvent) -> int:
    """A ``PaymentCaptured``'s amount (in the order's currency: the write side captures
    exactly the order's total)."""
    amount = e.payload.get("amount_cents")
    if type(amount) is not int or amount <= 0:
        raise AnalyticsError(e, f"bad payload: amount_cents {amount!r}")
    return amount


def month_deltas(
    months_before: Mapping[str, Mapping[MonthKey, int]],
    first_before: Mapping[str, datetime | None],
    first_after: Mapping[str, datetime | None],
    changes: Changes,
) -> dict[MonthKey, list[int]]:
    """(month, currency) -> [new_customers, returning_customers] to add.

    ``months_before`` holds each counting customer's stored orders per (month,
    currency); ``first_*`` its first counting order time before and after the batch.
    """
    after: dict[str, dict[MonthKey, int]] = {c: dict(m) for c, m in months_before.items()}
    for (c, month, cur), n in changes.customer_month_delta.items():
        rows = after.setdefault(c, {})
        rows[(month, cur)] = rows.get((month, cur), 0) + n
    deltas: dict[MonthKey, list[int]] = defaultdict(_two)
    for c in after:
        sides: tuple[tuple[Mapping[MonthKey, int], datetime | None, int], ...] = (
            (months_before.get(c, {}), first_before.get(c), -1),
            (after[c], first_after.get(c), +1),
        )
        for side, first, sign in sides:
            first_month = None if first is None else month_of(first)
            for key, orders in side.items():
                if orders > 0:
                    deltas[key][0 if key[0] == first_month else 1] += sign
    return {k: v for k, v in deltas.items() if v != [0, 0]}
