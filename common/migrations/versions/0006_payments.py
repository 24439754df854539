"""Payments: an order's payment status in the write model and the order read model.

``payment_status`` is UNPAID for every existing order (the protobuf zero value too, so
the Redis documents already read as UNPAID); ``payment_charge_id`` is the provider's
charge once captured (a refund needs it). Constant defaults: no table rewrite.

Revision ID: 0006
Revises: 0005
"""

from common.migrations.sql import execute_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        ALTER TABLE orders ADD COLUMN payment_status text NOT NULL DEFAULT 'UNPAID';
        ALTER TABLE orders ADD COLUMN payment_charge_id text NOT NULL DEFAULT '';
        ALTER TABLE read.order_read_model ADD COLUMN payment_status text NOT NULL
            DEFAULT 'UNPAID';
        """
    )


def downgrade() -> None:
    execute_script(
        """
        ALTER TABLE read.order_read_model DROP COLUMN payment_status;
        ALTER TABLE orders DROP COLUMN payment_charge_id;
        ALTER TABLE orders DROP COLUMN payment_status;
        """
    )
