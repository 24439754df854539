"""Each read-model row keeps its document's wire bytes (``doc``), so a get or a page from
the read models is one index scan returning bytes, as the projections' are, instead of a
row converted to a protobuf message per read.

The bytes can only come from the projector, so the three read models are emptied and
their checkpoint rows removed: the projector's next start rebuilds them from the event
log, and until then the read server answers UNAVAILABLE "being built" for them (never a
row without its document). The projections in Redis and the analytics are untouched.

Revision ID: 0009
Revises: 0008
"""

from common.migrations.sql import execute_script

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TABLES = ("product_read_model", "customer_read_model", "order_read_model")
_PROJECTIONS = "'pg:products', 'pg:customers', 'pg:orders'"


def upgrade() -> None:
    statements = [f"TRUNCATE read.{t};" for t in _TABLES]
    statements += [f"ALTER TABLE read.{t} ADD COLUMN doc bytea NOT NULL;" for t in _TABLES]
    statements.append(
        f"DELETE FROM read.projection_checkpoints WHERE projection IN ({_PROJECTIONS});"
    )
    execute_script("\n".join(statements))


def downgrade() -> None:
    execute_script("\n".join(f"ALTER TABLE read.{t} DROP COLUMN doc;" for t in _TABLES))
