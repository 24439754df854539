"""Least-privilege PostgreSQL roles, created and granted by every ``cqrs migrate``.

Roles are cluster-wide and grants must also cover tables a later migration adds, so this
is not an Alembic revision: it runs after the upgrade, each time, and is idempotent (it
revokes first, then grants exactly :data:`WRITER_PRIVILEGES` and the rest).

- ``cqrs_writer`` (the write server): per write-model table only what commands do
  (:data:`WRITER_PRIVILEGES`: the event log is append-only, nothing is ever deleted);
  the ``public`` sequences; SELECT on ``read.projection_checkpoints`` (the outbox
  backlog); nothing else.
- ``cqrs_reader`` (the read server): SELECT on the write model (the baseline, history),
  on ``read`` and on ``analytics``, except :data:`READER_HIDDEN` (the webhook secrets, the
  stored command replies); it cannot change anything.
- ``cqrs_projector``: SELECT on the write model and the events (not ``command_requests``);
  owns the ``read`` and ``analytics`` schemas and their tables, since its rebuilds create,
  swap and drop tables and a whole schema (``analytics__rebuild`` renamed into place), hence
  also CREATE on the database. What it creates later is readable by the reader (default
  privileges, and :func:`share_created` whoever runs the projector).
- Advisory locks serialize the write side's commands: only the writer, the projector and
  the migrating user may take one (:data:`ADVISORY_LOCKING`, revoked from PUBLIC in this
  database). The unlock functions stay PUBLIC: they release only the caller's own locks,
  and asyncpg's pool calls ``pg_advisory_unlock_all()`` on every release.

The roles log in without a password under trust authentication; elsewhere give them one
(``ALTER ROLE cqrs_reader PASSWORD '...'``): passwords are not this step's business.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

log = logging.getLogger(__name__)

WRITER, READER, PROJECTOR = "cqrs_writer", "cqrs_reader", "cqrs_projector"
# What the write server does to each table: no UPDATE/DELETE of events or replies (the log
# is append-only; INSERT ... RETURNING needs SELECT), soft deletes only (no DELETE at all).
WRITER_PRIVILEGES = {
    "products": "SELECT, INSERT, UPDATE",
    "customers": "SELECT, INSERT, UPDATE",
    "orders": "SELECT, INSERT, UPDATE",
    "order_items": "SELECT, INSERT",
    "events": "SELECT, INSERT",
    "command_requests": "SELECT, INSERT",
    "webhook_subscriptions": "SELECT, INSERT, UPDATE",
}
PROJECTOR_SCHEMAS = ("read", "analytics", "webhooks")
# Write tables the reader must not see: the webhook signing secrets (the read server lists
# subscriptions from the projector's webhooks schema, which holds no secret) and the stored
# command replies (another caller's replies are none of its business).
READER_HIDDEN = ("webhook_subscriptions", "command_requests")
# The projector signs deliveries (it reads webhook_subscriptions) but never needs replies.
PROJECTOR_HIDDEN = ("command_requests",)
# Every advisory-lock function that *takes* a lock (all overloads); see the module doc.
ADVISORY_LOCKING = """
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.proname LIKE 'pg%advisory%' AND p.proname NOT LIKE '%unlock%'
ORDER BY 1
"""


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
        await _grant_public_tables(conn)
        for schema in PROJECTOR_SCHEMAS:
            await _hand_to_projector(conn, schema)
        await conn.execute(f"GRANT USAGE ON SCHEMA read TO {WRITER}")
        await conn.execute(f"GRANT SELECT ON read.projection_checkpoints TO {WRITER}")
        await _default_privileges(conn)
        await _advisory_locks(conn)


async def _grant_public_tables(conn: asyncpg.Connection) -> None:
    """Exactly the privileges listed above on ``public`` (earlier versions granted more:
    revoke everything first, so an upgrade takes the surplus away)."""
    await conn.execute(
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {WRITER}, {READER}, {PROJECTOR}"
    )
    for table, privileges in WRITER_PRIVILEGES.items():
        await conn.execute(f"GRANT {privileges} ON public.{table} TO {WRITER}")
    await conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {WRITER}")
    await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}, {PROJECTOR}")
    for role, hidden in ((READER, READER_HIDDEN), (PROJECTOR, PROJECTOR_HIDDEN)):
        await conn.execute(f"REVOKE ALL ON {', '.join(f'public.{t}' for t in hidden)} FROM {role}")


async def _default_privileges(conn: asyncpg.Connection) -> None:
    """The reader may read what is created later in the projector's schemas, whoever creates
    it: the projector (anywhere: a renamed analytics schema is a new schema), or the migrating
    user (only in those schemas: never the write model's future tables, e.g. secrets). A
    projector run as another user grants itself (:func:`share_created`)."""
    await conn.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {PROJECTOR} GRANT SELECT ON TABLES TO {READER}"
    )
    await conn.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {PROJECTOR} GRANT USAGE ON SCHEMAS TO {READER}"
    )
    present = [
        s
        for s in PROJECTOR_SCHEMAS
        if await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", s)
    ]
    if present:
        await conn.execute(
            "ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER IN SCHEMA "
            f"{', '.join(present)} GRANT SELECT ON TABLES TO {READER}"
        )


async def _advisory_locks(conn: asyncpg.Connection) -> None:
    """Only the writer, the projector and the migrating user may take advisory locks in this
    database: a reader holding the lock of a product made its UpdateProduct wait and fail
    (pg_proc is per database, so other databases of the cluster keep the default)."""
    functions = [row[0] for row in await conn.fetch(ADVISORY_LOCKING)]
    for function in functions:
        await conn.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
        await conn.execute(
            f"GRANT EXECUTE ON FUNCTION {function} TO {WRITER}, {PROJECTOR}, CURRENT_USER"
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


_SHARING = f"""
SELECT to_regrole('{READER}') IS NOT NULL AS reader,
       CASE WHEN to_regrole('{PROJECTOR}') IS NULL OR current_user = '{PROJECTOR}' THEN false
            ELSE pg_has_role(current_user, '{PROJECTOR}', 'MEMBER')
                 AND EXISTS (SELECT 1 FROM pg_namespace
                             WHERE nspname = $1 AND nspowner = to_regrole('{PROJECTOR}'))
       END AS adopt
"""


async def share_created(
    conn: asyncpg.Connection,
    *,
    tables: Sequence[str] = (),
    schema: str | None = None,
    home: str,
) -> None:
    """Make what the projector just created (a rebuild's shadow ``tables``, or a whole copy
    ``schema`` and its tables) readable by ``cqrs_reader``, whoever runs the projector.

    Run as the projector's own role, default privileges already do this. Run as another
    user (``cqrs up`` as ``postgres``), they do not: grant explicitly, and when the roles
    are set up in this database (the projector owns ``home``, the live schema the objects
    will replace or join) hand the objects to the projector, so its next rebuild under its
    own role may drop and swap them. Without the roles (never migrated with them) nothing
    is done. ``tables`` are qualified names.
    """
    state = await conn.fetchrow(_SHARING, home)
    assert state is not None
    if state["reader"]:
        if schema is not None:
            await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {READER}")
        for table in tables:
            await conn.execute(f"GRANT SELECT ON {table} TO {READER}")
    if state["adopt"]:
        # The schema first: a new owner needs CREATE on the schema of a table it takes.
        if schema is not None:
            await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {PROJECTOR}")
        for table in tables:
            await conn.execute(f"ALTER TABLE {table} OWNER TO {PROJECTOR}")
