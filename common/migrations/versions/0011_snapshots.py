"""Snapshots of aggregates for time travel: ``Get*AsOf`` replays only what follows one.

``read.snapshots`` holds an aggregate's document after every ``CQRS_SNAPSHOT_EVERY``-th
event, written by the ``pg:snapshots`` consumer (common/snapshots.py); the read server
reads it (the ``read`` schema is the projector's, readable by the reader role). A new
empty table: the consumer fills it from its checkpoint (the origin on its first start).

Revision ID: 0011
Revises: 0010
"""

from common.migrations.sql import execute_script

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        CREATE TABLE read.snapshots (
            aggregate_id      uuid NOT NULL,
            aggregate_version bigint NOT NULL,
            aggregate_type    text NOT NULL,
            doc               bytea,  -- the serialized document; NULL: that event deleted it
            occurred_at       timestamptz NOT NULL,  -- of that event
            PRIMARY KEY (aggregate_id, aggregate_version)
        );
        """
    )


def downgrade() -> None:
    execute_script("DROP TABLE read.snapshots;")
