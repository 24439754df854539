"""Webhooks: the subscriptions' write table, and the dispatcher's tables.

``public.webhook_subscriptions`` is the aggregate's state (it holds the signing secret,
which no event carries). Schema ``webhooks`` belongs to the projector's dispatcher
(``webhooks:dispatch``): its own copy of the subscriptions, folded from their events in
log order (so which subscription receives an event is decided by the log, the same on
every replay), and one delivery row per (subscription, event), in log order.

Revision ID: 0005
Revises: 0004
"""

from common.migrations.sql import execute_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        CREATE TABLE webhook_subscriptions (
            id          uuid PRIMARY KEY,
            url         text NOT NULL,
            event_types jsonb NOT NULL,
            description text NOT NULL DEFAULT '',
            secret      text NOT NULL,
            -- the secret before the last rotation, still signing beside the new one for
            -- CQRS_WEBHOOKS_ROTATION_GRACE_MS after rotated_at (receivers switch over)
            previous_secret text NOT NULL DEFAULT '',
            rotated_at  timestamptz,
            status      text NOT NULL,
            version     bigint NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            deleted_at  timestamptz
        );

        CREATE SCHEMA IF NOT EXISTS webhooks;
        CREATE TABLE webhooks.subscriptions (
            id          uuid PRIMARY KEY,
            url         text NOT NULL,
            event_types text[] NOT NULL,
            description text NOT NULL,
            status      text NOT NULL,
            version     bigint NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            -- set while a FAILED delivery holds back the later ones (order per subscription)
            parked_at   timestamptz
        );
        CREATE INDEX subscriptions_newest ON webhooks.subscriptions (created_at DESC, id DESC);

        -- id grows in log order (one fan-out leader inserts in log order): the order in
        -- which a subscription's deliveries are sent; "msg_<id>" is the webhook-id.
        CREATE TABLE webhooks.deliveries (
            id              bigserial PRIMARY KEY,
            subscription_id uuid NOT NULL REFERENCES webhooks.subscriptions (id),
            event_seq       bigint NOT NULL,
            event_type      text NOT NULL,
            aggregate_id    uuid NOT NULL,
            status          text NOT NULL DEFAULT 'PENDING',
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_status     integer NOT NULL DEFAULT 0,
            last_error      text NOT NULL DEFAULT '',
            created_at      timestamptz NOT NULL DEFAULT now(),
            delivered_at    timestamptz,
            UNIQUE (subscription_id, event_seq)
        );
        CREATE INDEX deliveries_queue ON webhooks.deliveries (subscription_id, id)
            WHERE status <> 'DELIVERED';
        CREATE INDEX deliveries_by_status ON webhooks.deliveries (subscription_id, status, id);
        """
    )


def downgrade() -> None:
    execute_script(
        """
        DROP SCHEMA webhooks CASCADE;
        DROP TABLE webhook_subscriptions;
        """
    )
