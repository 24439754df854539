"""PostgreSQL read models (schema ``read``) and projection checkpoints.

Revision ID: 0002
Revises: 0001
"""

from common.migrations.sql import execute_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        CREATE SCHEMA IF NOT EXISTS read;

        CREATE TABLE read.product_read_model (
            id          uuid PRIMARY KEY,
            name        text NOT NULL,
            description text NOT NULL,
            price_cents bigint NOT NULL,
            currency    char(3) NOT NULL,
            category    text NOT NULL,
            stock       integer NOT NULL,
            version     bigint NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL
        );
        CREATE INDEX product_read_model_newest ON read.product_read_model (created_at DESC, id DESC);
        CREATE INDEX product_read_model_category
            ON read.product_read_model (category, created_at DESC, id DESC);

        CREATE TABLE read.customer_read_model (
            id          uuid PRIMARY KEY,
            name        text NOT NULL,
            email       text NOT NULL,
            address     text NOT NULL,
            city        text NOT NULL,
            postal_code text NOT NULL,
            country     text NOT NULL,
            version     bigint NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL
        );
        CREATE INDEX customer_read_model_newest
            ON read.customer_read_model (created_at DESC, id DESC);

        CREATE TABLE read.order_read_model (
            id             uuid PRIMARY KEY,
            order_number   text NOT NULL,
            customer_id    uuid NOT NULL,
            customer_name  text NOT NULL,
            customer_email text NOT NULL,
            items          jsonb NOT NULL,
            items_count    integer NOT NULL,
            total_cents    bigint NOT NULL,
            currency       char(3) NOT NULL,
            status         text NOT NULL,
            version        bigint NOT NULL,
            created_at     timestamptz NOT NULL,
            updated_at     timestamptz NOT NULL
        );
        CREATE INDEX order_read_model_newest ON read.order_read_model (created_at DESC, id DESC);
        CREATE INDEX order_read_model_customer
            ON read.order_read_model (customer_id, created_at DESC, id DESC);
        CREATE INDEX order_read_model_status
            ON read.order_read_model (status, created_at DESC, id DESC);
        CREATE INDEX order_read_model_customer_status
            ON read.order_read_model (customer_id, status, created_at DESC, id DESC);

        -- One row per projection (PostgreSQL ones are updated in the same
        -- transaction as their rows). Position = (xid, seq), see common.positions.
        CREATE TABLE read.projection_checkpoints (
            projection text PRIMARY KEY,
            xid        bigint NOT NULL,
            seq        bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        -- Poison events: a projection that cannot apply an event stops and says so here.
        CREATE TABLE read.projection_failures (
            projection  text PRIMARY KEY,
            event_seq   bigint NOT NULL,
            event_type  text NOT NULL,
            error       text NOT NULL,
            failed_at   timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    execute_script("DROP SCHEMA read CASCADE")
