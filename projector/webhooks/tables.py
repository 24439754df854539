"""The SQL of the webhook tables (schema ``webhooks``, migration 0005)."""

from __future__ import annotations

ACTIVE, DISABLED = "ACTIVE", "DISABLED"
PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"

# The active subscriptions and where in the log each was created (its $1 event, NULL:
# not in the log), so a batch read again after a rewind gives none an event from before it.
ACTIVE_SUBSCRIPTIONS = """
SELECT s.id::text AS id, s.event_types, c.xid::text::bigint AS xid, c.seq
FROM webhooks.subscriptions s
LEFT JOIN LATERAL (
  SELECT e.xid, e.seq FROM events e
  WHERE e.aggregate_id = s.id AND e.event_type = $1 ORDER BY e.aggregate_version LIMIT 1
) c ON true
WHERE s.status = 'ACTIVE'
"""

SUBSCRIPTION_CREATED = """
INSERT INTO webhooks.subscriptions
  (id, url, event_types, description, status, version, created_at, updated_at)
VALUES ($1::uuid, $2, $3::text[], $4, 'ACTIVE', $5, $6, $6)
ON CONFLICT (id) DO NOTHING
"""

# Disabled ($3 = 'DISABLED') or secret rotated ($3 = NULL: only the version moves).
SUBSCRIPTION_CHANGED = """
UPDATE webhooks.subscriptions SET status = coalesce($3, status), version = $2, updated_at = $4
WHERE id = $1::uuid AND version < $2
"""

ADD_DELIVERIES = """
INSERT INTO webhooks.deliveries (subscription_id, event_seq, event_type, aggregate_id)
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::uuid[])
ON CONFLICT (subscription_id, event_seq) DO NOTHING
"""

# Subscriptions whose queue the dispatcher should work on now.
WORKABLE = """
SELECT s.id::text AS id FROM webhooks.subscriptions s
WHERE s.status = 'ACTIVE' AND s.parked_at IS NULL
  AND EXISTS (SELECT 1 FROM webhooks.deliveries d
              WHERE d.subscription_id = s.id AND d.status = 'PENDING')
"""

# The front of one subscription's queue: its oldest deliveries not yet DELIVERED, in log
# order (``ORDER BY d.id``: the dispatcher's order rules read the rows in this order, and the
# table's physical order is not the log's once a failed attempt rewrote a row), with what the
# dispatcher decides on; $2 rows at most.
QUEUE = """
SELECT d.id AS delivery_id, d.aggregate_id::text AS aggregate_id, d.status, d.attempts,
       greatest(extract(epoch FROM d.next_attempt_at - now()), 0)::float8 AS wait_s,
       s.status AS subscription_status, s.parked_at IS NOT NULL AS parked
FROM webhooks.deliveries d
JOIN webhooks.subscriptions s ON s.id = d.subscription_id
WHERE d.subscription_id = $1::uuid AND d.status <> 'DELIVERED'
ORDER BY d.id LIMIT $2
"""

# What sending deliveries $1 needs: the event row (EVENT_COLUMNS, alias v), the URL, the
# current secret (and the previous one during its grace period, $2 seconds), and how long
# the delivery has been failing (NULL: it has not failed yet).
TO_SEND = """
SELECT d.id AS delivery_id, d.subscription_id::text AS subscription_id, d.status, d.attempts,
       extract(epoch FROM now() - d.failing_since)::float8 AS failing_s,
       s.url, w.secret, v.metadata::text AS metadata,
       CASE WHEN w.rotated_at > now() - make_interval(secs => $2) THEN w.previous_secret
            ELSE '' END AS previous_secret,
       {event_columns}
FROM webhooks.deliveries d
JOIN webhooks.subscriptions s ON s.id = d.subscription_id
JOIN public.webhook_subscriptions w ON w.id = d.subscription_id
JOIN events v ON v.seq = d.event_seq
WHERE d.id = ANY($1::bigint[]) AND d.status = 'PENDING'
ORDER BY d.id
"""

# Deliveries $1 answered with statuses $2 (2xx), recorded together.
DELIVERED_NOW = """
UPDATE webhooks.deliveries d SET status = 'DELIVERED', attempts = d.attempts + 1,
  last_status = u.status, last_error = '', delivered_at = now()
FROM unnest($1::bigint[], $2::int[]) AS u(id, status)
WHERE d.id = u.id AND d.status = 'PENDING'
"""

# $3: whether this attempt counts; $4: seconds until the next one; $5: park it (FAILED);
# $7: it failed (the failing clock starts, if not running) rather than being postponed.
ATTEMPT_FAILED = """
UPDATE webhooks.deliveries SET
  attempts = attempts + $3::int,
  status = CASE WHEN $5 THEN 'FAILED' ELSE status END,
  next_attempt_at = now() + make_interval(secs => $4),
  last_status = $2, last_error = $6,
  failing_since = CASE WHEN $7 THEN coalesce(failing_since, now()) ELSE failing_since END
WHERE id = $1 AND status = 'PENDING'
"""

PARK = "UPDATE webhooks.subscriptions SET parked_at = now() WHERE id = $1::uuid"

# `cqrs webhooks redeliver`: FAILED deliveries back to PENDING (attempts and failing clock
# from zero), the subscription unparked.
REDELIVER = """
WITH again AS (
  UPDATE webhooks.deliveries SET status = 'PENDING', attempts = 0, next_attempt_at = now(),
    failing_since = NULL, last_error = 'redelivery requested; was: ' || last_error
  WHERE status = 'FAILED' AND ($1::uuid IS NULL OR subscription_id = $1::uuid)
    AND ($2::bigint IS NULL OR id = $2::bigint)
  RETURNING subscription_id
), unparked AS (
  UPDATE webhooks.subscriptions SET parked_at = NULL
  WHERE parked_at IS NOT NULL AND ($1::uuid IS NULL OR id = $1::uuid)
    AND ($2::bigint IS NULL OR id IN (SELECT subscription_id FROM again))
  RETURNING 1
), fresh AS (
  -- the deliveries waiting behind them start their failing clock afresh too
  UPDATE webhooks.deliveries SET failing_since = NULL
  WHERE status = 'PENDING' AND failing_since IS NOT NULL
    AND subscription_id IN (SELECT subscription_id FROM again)
  RETURNING 1
)
SELECT (SELECT count(*) FROM again) AS deliveries, (SELECT count(*) FROM unparked) AS unparked
"""

# A rewind of the fan-out to position ($1, $2) (projector.webhooks.fanout): the deliveries
# of the events after it to subscriptions still active, sent or failed, are queued again
# (their id, hence webhook-id, kept; attempts and the failing clock from zero; created_at
# now: the backlog's age counts from here); a subscription parked only by one of them is
# unparked. How many were queued again.
REWIND = """
WITH again AS (
  UPDATE webhooks.deliveries d SET status = 'PENDING', attempts = 0, next_attempt_at = now(),
    created_at = now(), delivered_at = NULL, failing_since = NULL,
    last_error = left('queued again by a rewind'
                      || CASE WHEN d.last_error = '' THEN '' ELSE '; was: ' || d.last_error END, 200)
  FROM events e, webhooks.subscriptions s
  WHERE e.seq = d.event_seq AND (e.xid, e.seq) > ($1::bigint::text::xid8, $2::bigint)
    AND s.id = d.subscription_id AND s.status = 'ACTIVE' AND d.status <> 'PENDING'
  RETURNING d.subscription_id
), unparked AS (
  UPDATE webhooks.subscriptions s SET parked_at = NULL
  WHERE s.parked_at IS NOT NULL AND s.id IN (SELECT subscription_id FROM again)
    AND NOT EXISTS (
      SELECT 1 FROM webhooks.deliveries f JOIN events e ON e.seq = f.event_seq
      WHERE f.subscription_id = s.id AND f.status = 'FAILED'
        AND (e.xid, e.seq) <= ($1::bigint::text::xid8, $2::bigint))
  RETURNING 1
)
SELECT count(*) FROM again
"""

# Per subscription: pending deliveries, the oldest one's age, whether parked (the gauges).
BACKLOG = """
SELECT s.id::text AS id, s.parked_at IS NOT NULL AS parked,
  count(d.id) AS pending,
  coalesce(extract(epoch FROM now() - min(d.created_at)), 0)::float8 AS oldest_s
FROM webhooks.subscriptions s
LEFT JOIN webhooks.deliveries d ON d.subscription_id = s.id AND d.status <> 'DELIVERED'
WHERE s.status = 'ACTIVE'
GROUP BY s.id
"""

SUMMARY = """
SELECT (SELECT count(*) FROM webhooks.subscriptions WHERE status = 'ACTIVE') AS active,
       (SELECT count(*) FROM webhooks.subscriptions WHERE parked_at IS NOT NULL) AS parked,
       count(*) FILTER (WHERE status = 'PENDING') AS pending,
       count(*) FILTER (WHERE status = 'FAILED') AS failed,
       count(*) FILTER (WHERE status = 'DELIVERED') AS delivered
FROM webhooks.deliveries
"""
