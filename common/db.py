"""Database creation and migration (``cqrs migrate``)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from common.roles import ensure_roles

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def split_database(dsn: str) -> tuple[str, str]:
    """Return (maintenance DSN pointing at the ``postgres`` database, database name)."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/") or "postgres"
    return urlunsplit(parts._replace(path="/postgres")), name


async def create_database_if_missing(dsn: str) -> bool:
    """Create the database named in ``dsn`` unless it exists; True if it was created."""
    admin_dsn, name = split_database(dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # created concurrently by another `migrate`
        log.info("created database %s", name)
        return True
    finally:
        await conn.close()


async def drop_database(dsn: str) -> None:
    """Drop the database named in ``dsn`` (tests), disconnecting its sessions."""
    admin_dsn, name = split_database(dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()


def upgrade_schema(sqlalchemy_url: str, revision: str = "head") -> None:
    """Apply Alembic migrations (blocking; runs its own event loop)."""
    from alembic import command
    from alembic.config import Config

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url)
    command.upgrade(config, revision)


async def migrate(dsn: str, sqlalchemy_url: str) -> None:
    """Create the database if missing, apply every migration, then set up the
    least-privilege roles (common/roles.py)."""
    import asyncio

    await create_database_if_missing(dsn)
    before = await schema_revision(dsn)
    await asyncio.to_thread(upgrade_schema, sqlalchemy_url)
    after = await schema_revision(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await ensure_roles(conn)
    finally:
        await conn.close()
    # Alembic's own "Running upgrade" lines are INFO of a third party (hidden by default).
    if before == after:
        log.info("schema already at revision %s", after)
    else:
        log.info("schema upgraded from revision %s to %s", before or "(none)", after)


async def schema_revision(dsn: str) -> str | None:
    """The Alembic revision the database is at (None before the first migration)."""
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        return await conn.fetchval("SELECT version_num FROM alembic_version") if exists else None
    finally:
        await conn.close()


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's ``reset``: nothing to reset when a connection goes back to the pool
    (asyncpg rolls back an open transaction itself). The default reset is a round trip per
    release (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) for session state that no
    pool of ours sets: transaction-level locks only, no LISTEN, no SET, no cursor outliving
    its transaction. What holds a session lock (the projector's leases and rebuild lock,
    its membership) or LISTENs has a connection of its own, outside every pool. The
    projector's pool keeps asyncpg's default reset (projector/bootstrap.py says why)."""
