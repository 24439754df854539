"""Helper for migrations written as plain SQL scripts."""

from __future__ import annotations

from alembic import op


def execute_script(script: str) -> None:
    """Run a multi-statement script (asyncpg prepares statements one at a time)."""
    for statement in script.split(";\n"):
        if statement.strip():
            op.execute(statement)
