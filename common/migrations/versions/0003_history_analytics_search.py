"""Event schema versions, the materialized analytics (schema ``analytics``) and full-text
search columns on the read models.

Revision ID: 0003
Revises: 0002
"""

from common.migrations.sql import execute_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        -- Every event row says which schema of its type it was written with; rows
        -- written before this column existed are version 1. Readers upcast.
        ALTER TABLE events ADD COLUMN schema_version smallint NOT NULL DEFAULT 1;
        -- History and time travel read one aggregate's events in version order: the
        -- UNIQUE (aggregate_id, aggregate_version) index serves them.

        -- Write-model analytics (SOURCE_WRITE_MODEL) group orders by customer and
        -- month; these keep the live queries from sorting the whole table.
        CREATE INDEX order_items_product ON order_items (product_id);

        CREATE SCHEMA analytics;

        -- One row per order ever placed: what its events need to be undone.
        CREATE TABLE analytics.orders (
            order_id    uuid PRIMARY KEY,
            customer_id uuid NOT NULL,
            currency    char(3) NOT NULL,
            total_cents bigint NOT NULL,
            created_at  timestamptz NOT NULL,
            status      text NOT NULL,
            deleted     boolean NOT NULL DEFAULT false
        );
        CREATE INDEX orders_customer_counting ON analytics.orders (customer_id, created_at)
            WHERE NOT deleted AND status <> 'CANCELLED';

        CREATE TABLE analytics.order_lines (
            order_id         uuid NOT NULL,
            line_no          integer NOT NULL,
            product_id       uuid NOT NULL,
            quantity         integer NOT NULL,
            line_total_cents bigint NOT NULL,
            PRIMARY KEY (order_id, line_no)
        );
        CREATE INDEX order_lines_product ON analytics.order_lines (product_id);

        CREATE TABLE analytics.customers (
            customer_id      uuid PRIMARY KEY,
            deleted          boolean NOT NULL DEFAULT false,
            total_orders     bigint NOT NULL DEFAULT 0,
            cancelled_orders bigint NOT NULL DEFAULT 0,
            first_order_at   timestamptz,
            last_order_at    timestamptz
        );

        CREATE TABLE analytics.customer_currencies (
            customer_id uuid NOT NULL,
            currency    char(3) NOT NULL,
            orders      bigint NOT NULL,
            value_cents bigint NOT NULL,
            PRIMARY KEY (customer_id, currency)
        );
        CREATE INDEX customer_currencies_top
            ON analytics.customer_currencies (value_cents DESC, customer_id, currency);
        CREATE INDEX customer_currencies_top_in
            ON analytics.customer_currencies (currency, value_cents DESC, customer_id);

        CREATE TABLE analytics.products (
            product_id   uuid PRIMARY KEY,
            deleted      boolean NOT NULL DEFAULT false,
            units_sold   bigint NOT NULL DEFAULT 0,
            orders_count bigint NOT NULL DEFAULT 0,
            last_sold_at timestamptz
        );

        CREATE TABLE analytics.product_currencies (
            product_id    uuid NOT NULL,
            currency      char(3) NOT NULL,
            units_sold    bigint NOT NULL,
            orders_count  bigint NOT NULL,
            revenue_cents bigint NOT NULL,
            PRIMARY KEY (product_id, currency)
        );
        CREATE INDEX product_currencies_revenue
            ON analytics.product_currencies (revenue_cents DESC, product_id, currency);
        CREATE INDEX product_currencies_units
            ON analytics.product_currencies (units_sold DESC, product_id, currency);
        CREATE INDEX product_currencies_revenue_in
            ON analytics.product_currencies (currency, revenue_cents DESC, product_id);
        CREATE INDEX product_currencies_units_in
            ON analytics.product_currencies (currency, units_sold DESC, product_id);

        CREATE TABLE analytics.product_customers (
            product_id  uuid NOT NULL,
            customer_id uuid NOT NULL,
            units       bigint NOT NULL,
            PRIMARY KEY (product_id, customer_id)
        );
        CREATE INDEX product_customers_top
            ON analytics.product_customers (product_id, units DESC, customer_id);

        CREATE TABLE analytics.customer_months (
            customer_id uuid NOT NULL,
            month       date NOT NULL,
            currency    char(3) NOT NULL,
            orders      bigint NOT NULL,
            PRIMARY KEY (customer_id, month, currency)
        );

        CREATE TABLE analytics.months (
            month               date NOT NULL,
            currency            char(3) NOT NULL,
            orders              bigint NOT NULL,
            revenue_cents       bigint NOT NULL,
            new_customers       bigint NOT NULL,
            returning_customers bigint NOT NULL,
            PRIMARY KEY (month, currency)
        );

        -- Full-text search: generated columns (a rebuild's LIKE ... INCLUDING ALL
        -- copies them and their indexes). The 'simple' configuration: names and
        -- emails are not English prose, and prefixes must match as typed.
        ALTER TABLE read.product_read_model ADD COLUMN search tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('simple', name), 'A')
            || setweight(to_tsvector('simple', category), 'B')
            || setweight(to_tsvector('simple', description), 'C')
        ) STORED;
        CREATE INDEX product_read_model_search ON read.product_read_model USING gin (search);
        ALTER TABLE read.customer_read_model ADD COLUMN search tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('simple', name), 'A')
            || setweight(to_tsvector('simple', email), 'B')
            || setweight(to_tsvector('simple', translate(email, '@.+-_', '     ')), 'B')
        ) STORED;
        CREATE INDEX customer_read_model_search ON read.customer_read_model USING gin (search);
        """
    )


def downgrade() -> None:
    execute_script(
        """
        ALTER TABLE read.customer_read_model DROP COLUMN search;
        ALTER TABLE read.product_read_model DROP COLUMN search;
        DROP SCHEMA analytics CASCADE;
        DROP INDEX order_items_product;
        ALTER TABLE events DROP COLUMN schema_version;
        """
    )
