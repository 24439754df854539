"""Idempotency keys per caller, and no webhook secret in a stored reply.

``command_requests`` is keyed by (subject, request_id): the request_id is visible to every
reader (it is in each event's metadata), so a key shared by all callers let anyone replay
someone else's ``CreateWebhookSubscription`` / ``RotateWebhookSecret`` and read the
secret. Existing rows get the empty subject (an open server's callers): on a server that
authenticates, a retry that spans this upgrade executes again.

Stored replies no longer hold secrets. An existing reply's plaintext ``secret`` becomes its
SHA-256 (``secret_sha256``: a retry by the same subject reads the secret from the
subscription while it is still that one); an empty ``secret`` key (every other command
stored one) is dropped. The old row versions stay on disk until vacuum and in earlier
backups: rotate secrets that were created before this revision if that matters.

Revision ID: 0008
Revises: 0007
"""

from common.migrations.sql import execute_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        ALTER TABLE command_requests ADD COLUMN subject text NOT NULL DEFAULT '';
        ALTER TABLE command_requests DROP CONSTRAINT command_requests_pkey,
            ADD CONSTRAINT command_requests_pkey PRIMARY KEY (subject, request_id);
        UPDATE command_requests
            SET reply = CASE
                WHEN reply->>'secret' = '' THEN reply - 'secret'
                ELSE (reply - 'secret') || jsonb_build_object(
                    'secret_sha256',
                    encode(sha256(convert_to(reply->>'secret', 'UTF8')), 'hex'))
                END
            WHERE reply ? 'secret';
        """
    )


def downgrade() -> None:
    # Secrets are not restored (there is nothing to restore them from); replies of other
    # subjects' equal request ids cannot share one key again, so only the open server's
    # rows ('' subject) are kept.
    execute_script(
        """
        DELETE FROM command_requests WHERE subject <> '';
        ALTER TABLE command_requests DROP CONSTRAINT command_requests_pkey,
            ADD CONSTRAINT command_requests_pkey PRIMARY KEY (request_id);
        ALTER TABLE command_requests DROP COLUMN subject;
        """
    )
