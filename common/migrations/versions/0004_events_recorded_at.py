"""``events.recorded_at``: when the write side stored the event (database clock).

``occurred_at`` is application time (the seeder back-dates it by months), so the
projector's lag in seconds and its freshness are measured from ``recorded_at``.
``now()`` is a stable default: PostgreSQL evaluates it once for the rows already
there (they get the time of this migration) and rewrites nothing; every insert
that names its columns (the write path, the bulk seeder) gets its transaction's
start time.

Revision ID: 0004
Revises: 0003
"""

from common.migrations.sql import execute_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        ALTER TABLE events ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now();
        """
    )


def downgrade() -> None:
    execute_script("ALTER TABLE events DROP COLUMN recorded_at;")
