"""Payments in the materialized analytics (schema ``analytics``, consumer ``pg:analytics``).

A payment counts for its order's customer, in the order's currency, while the order is not
deleted and its payment is CAPTURED. ``analytics.orders.paid_cents`` is the fact that undoes
it: the captured amount while the payment is CAPTURED, NULL otherwise (never captured, or
refunded). The sums: ``customers.total_payments`` and, per currency,
``customer_currencies.payments``/``paid_cents``. Every existing row starts at no payment,
which is exact for a log without payment events (they are new with 0006); a log that already
holds some needs ``cqrs projector rebuild --only analytics``. Constant defaults: no rewrite.

Revision ID: 0007
Revises: 0006
"""

from common.migrations.sql import execute_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        ALTER TABLE analytics.orders ADD COLUMN paid_cents bigint;
        ALTER TABLE analytics.customers ADD COLUMN total_payments bigint NOT NULL DEFAULT 0;
        ALTER TABLE analytics.customer_currencies
            ADD COLUMN payments bigint NOT NULL DEFAULT 0,
            ADD COLUMN paid_cents bigint NOT NULL DEFAULT 0;
        """
    )


def downgrade() -> None:
    execute_script(
        """
        ALTER TABLE analytics.customer_currencies DROP COLUMN paid_cents, DROP COLUMN payments;
        ALTER TABLE analytics.customers DROP COLUMN total_payments;
        ALTER TABLE analytics.orders DROP COLUMN paid_cents;
        """
    )
