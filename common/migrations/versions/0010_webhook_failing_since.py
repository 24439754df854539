"""Webhook deliveries remember since when they fail, so a delivery parks after a maximum age.

``webhooks.deliveries.failing_since`` is set by the dispatcher at a delivery's first failed
attempt (or its first call refused by an open circuit breaker) and cleared by ``cqrs
webhooks redeliver``; once it is older than ``CQRS_WEBHOOKS_MAX_AGE_MS`` the next failure
parks the delivery as FAILED, however few attempts were counted (a breaker kept open by
other deliveries to the same host lets few of them through). Adding a nullable column
rewrites nothing.

Revision ID: 0010
Revises: 0009
"""

from common.migrations.sql import execute_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("ALTER TABLE webhooks.deliveries ADD COLUMN failing_since timestamptz;")


def downgrade() -> None:
    execute_script("ALTER TABLE webhooks.deliveries DROP COLUMN failing_since;")
