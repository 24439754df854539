"""Write model tables, the event log (outbox) and idempotency records.

Revision ID: 0001
Revises:
"""

from common.migrations.sql import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        CREATE TABLE products (
            id          uuid PRIMARY KEY,
            name        text NOT NULL CHECK (name <> ''),
            description text NOT NULL DEFAULT '',
            price_cents bigint NOT NULL CHECK (price_cents >= 0),
            currency    char(3) NOT NULL,
            category    text NOT NULL DEFAULT '',
            stock       integer NOT NULL CHECK (stock >= 0),
            version     bigint NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            deleted_at  timestamptz
        );
        CREATE INDEX products_newest ON products (created_at DESC, id DESC)
            WHERE deleted_at IS NULL;
        CREATE INDEX products_category_newest ON products (category, created_at DESC, id DESC)
            WHERE deleted_at IS NULL;

        CREATE TABLE customers (
            id          uuid PRIMARY KEY,
            name        text NOT NULL CHECK (name <> ''),
            email       text NOT NULL,
            address     text NOT NULL DEFAULT '',
            city        text NOT NULL DEFAULT '',
            postal_code text NOT NULL DEFAULT '',
            country     text NOT NULL DEFAULT '',
            version     bigint NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            deleted_at  timestamptz
        );
        -- Emails are stored lower-cased; unique among customers that are not deleted.
        CREATE UNIQUE INDEX customers_email_unique ON customers (email) WHERE deleted_at IS NULL;
        CREATE INDEX customers_newest ON customers (created_at DESC, id DESC)
            WHERE deleted_at IS NULL;

        CREATE SEQUENCE order_number_seq;
        CREATE TABLE orders (
            id           uuid PRIMARY KEY,
            order_number text NOT NULL UNIQUE,
            customer_id  uuid NOT NULL REFERENCES customers (id),
            total_cents  bigint NOT NULL CHECK (total_cents >= 0),
            currency     char(3) NOT NULL,
            status       text NOT NULL CHECK (status IN
                           ('PENDING', 'CONFIRMED', 'SHIPPED', 'DELIVERED', 'CANCELLED')),
            version      bigint NOT NULL,
            created_at   timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL,
            deleted_at   timestamptz
        );
        CREATE INDEX orders_newest ON orders (created_at DESC, id DESC) WHERE deleted_at IS NULL;
        CREATE INDEX orders_customer_newest ON orders (customer_id, created_at DESC, id DESC)
            WHERE deleted_at IS NULL;
        CREATE INDEX orders_status_newest ON orders (status, created_at DESC, id DESC)
            WHERE deleted_at IS NULL;

        CREATE TABLE order_items (
            order_id         uuid NOT NULL REFERENCES orders (id),
            line_no          integer NOT NULL,
            product_id       uuid NOT NULL REFERENCES products (id),
            name             text NOT NULL,
            quantity         integer NOT NULL CHECK (quantity > 0),
            unit_price_cents bigint NOT NULL,
            line_total_cents bigint NOT NULL,
            PRIMARY KEY (order_id, line_no)
        );

        -- The outbox and the permanent event store. `xid` is the writing
        -- transaction's id: the projector reads only below the oldest in-flight
        -- transaction, in (xid, seq) order, so a late commit is never skipped.
        CREATE TABLE events (
            seq               bigserial PRIMARY KEY,
            xid               xid8 NOT NULL DEFAULT pg_current_xact_id(),
            aggregate_type    text NOT NULL,
            aggregate_id      uuid NOT NULL,
            aggregate_version bigint NOT NULL,
            event_type        text NOT NULL,
            payload           jsonb NOT NULL,
            metadata          jsonb NOT NULL DEFAULT '{}',
            occurred_at       timestamptz NOT NULL,
            UNIQUE (aggregate_id, aggregate_version)
        );
        CREATE INDEX events_position ON events (xid, seq);

        -- Idempotency keys: a retried command returns the stored reply.
        CREATE TABLE command_requests (
            request_id   text PRIMARY KEY,
            command      text NOT NULL,
            payload_hash text NOT NULL,
            reply        jsonb NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    execute_script(
        """
        DROP TABLE command_requests, events, order_items, orders, customers, products;
        DROP SEQUENCE order_number_seq;
        """
    )
