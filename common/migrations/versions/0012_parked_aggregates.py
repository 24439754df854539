"""Parked aggregates: a projection with the ``park`` policy sets aside the aggregate of an
event it cannot apply (that event and every later one of the same aggregate) and goes on
with the others (projector/parking.py).

One row per consumer (its base name: every copy and segment of it honours the row) and
aggregate. ``released`` lists the segments that have replayed it after an unpark (a split
consumer's row goes once all have); the read server reads the table to answer reads of a
parked document with FAILED_PRECONDITION.

Revision ID: 0012
Revises: 0011
"""

from common.migrations.sql import execute_script

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        CREATE TABLE read.parked_aggregates (
            consumer         text NOT NULL,    -- base name, e.g. redis:orders
            aggregate_type   text NOT NULL,
            aggregate_id     text NOT NULL,
            from_xid         bigint NOT NULL,  -- the first event set aside (its position)
            from_seq         bigint NOT NULL,
            event_type       text NOT NULL,
            event_version    bigint NOT NULL,
            error            text NOT NULL,
            parked_at        timestamptz NOT NULL DEFAULT now(),
            released         text[] NOT NULL DEFAULT '{}',  -- segments that replayed it
            unpark_requested_at timestamptz,   -- set by `cqrs projector unpark`
            unpark_error     text,             -- why the last replay failed (still parked)
            PRIMARY KEY (consumer, aggregate_type, aggregate_id)
        );
        """
    )


def downgrade() -> None:
    execute_script("DROP TABLE read.parked_aggregates;")
