"""Least-privilege PostgreSQL roles, created and granted by every ``cqrs migrate``.

Roles are cluster-wide and grants must also cover tables a later migration adds, so this
is not an Alembic revision: it runs after the upgrade, each time, and is idempotent.

- ``cqrs_writer`` (the write server): reads and writes the write model (``public``:
  products, customers, orders, order_items, events, command_requests and their
  sequences); reads ``read.projection_checkpoints`` (the outbox backlog); nothing else.
- ``cqrs_reader`` (the read server): SELECT on the write model (the baseline, history),
  on ``read`` and on ``analytics``; it cannot change anything.
- ``cqrs_projector``: SELECT on the write model and the events; owns the ``read`` and
  ``analytics`` schemas and their tables, since its rebuilds create, swap and drop tables
  and a whole schema (``analytics__rebuild`` renamed into place), hence also CREATE on the
  database. What it creates later is readable by the reader (default privileges).

The roles log in without a password under trust authentication; elsewhere give them one
(``ALTER ROLE cqrs_reader PASSWORD '...'``): passwords are not this step's business.
"""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger(__name__)

WRITER, READER, PROJECTOR = "cqrs_writer", "cqrs_reader", "cqrs_projector"
WRITE_TABLES = (
    "products", "customers", "orders", "order_items", "events", "command_requests",
    "webhook_subscriptions",
)  # fmt: skip
PROJECTOR_SCHEMAS = ("read", "analytics", "webhooks")
# Write tables the reader must not see: the webhook signing secrets (the read server lists
# subscriptions from the projector's webhooks schema, which holds no secret).
SECRET_TABLES = ("webhook_subscriptions",)


async def ensure_roles(conn: asyncpg.Connection) -> bool:
    """Create the roles (if missing) and grant them this database; False (with a warning)
    when the connected user may not manage roles (the grants roll back together)."""
    try:
        await _ensure(conn)
    except asyncpg.InsufficientPrivilegeError as exc:
        user = await conn.fetchval("SELECT current_user")
        log.warning("least-privilege roles not set up: %s may not (%s)", user, exc)
        return False
    return True


async def _ensure(conn: asyncpg.Connection) -> None:
    for role in (WRITER, READER, PROJECTOR):
        # Concurrent migrations of other databases may create it at the same moment.
        await conn.execute(
            f"""DO $$ BEGIN CREATE ROLE {role} LOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"""
        )
    database = await conn.fetchval("SELECT quote_ident(current_database())")
    async with conn.transaction():
        # One migration at a time per database; roles of the cluster are shared.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('cqrs roles'))")
        await conn.execute(
            f"GRANT CONNECT ON DATABASE {database} TO {WRITER}, {READER}, {PROJECTOR}"
        )
        await conn.execute(f"GRANT CREATE ON DATABASE {database} TO {PROJECTOR}")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {WRITER}, {READER}, {PROJECTOR}")
        tables = ", ".join(f"public.{t}" for t in WRITE_TABLES)
        await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {WRITER}")
        await conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {WRITER}")
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}, {PROJECTOR}")
        secret = ", ".join(f"public.{t}" for t in SECRET_TABLES)
        await conn.execute(f"REVOKE ALL ON {secret} FROM {READER}")
        for schema in PROJECTOR_SCHEMAS:
            await _hand_to_projector(conn, schema)
        await conn.execute(f"GRANT USAGE ON SCHEMA read TO {WRITER}")
        await conn.execute(f"GRANT SELECT ON read.projection_checkpoints TO {WRITER}")
        # What the projector creates later (rebuild copies, a renamed analytics schema).
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {PROJECTOR} GRANT SELECT ON TABLES TO {READER}"
        )
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {PROJECTOR} GRANT USAGE ON SCHEMAS TO {READER}"
        )


async def _hand_to_projector(conn: asyncpg.Connection, schema: str) -> None:
    """``schema`` and everything in it owned by the projector, readable by the reader."""
    if not await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", schema):
        return
    await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {PROJECTOR}")
    rows = await conn.fetch(
        """SELECT quote_ident(c.relname) AS name, c.relkind
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm')""",
        schema,
    )
    # Indexes and owned sequences follow their table.
    for row in rows:
        await conn.execute(f"ALTER TABLE {schema}.{row['name']} OWNER TO {PROJECTOR}")
    await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {READER}")
    await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {READER}")
