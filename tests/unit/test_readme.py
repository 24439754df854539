"""The README stays true to the code where it can be checked without running anything:
its configuration table names every setting, and the migration it says `cqrs migrate`
reaches is the newest one."""

from __future__ import annotations

import re
from pathlib import Path

from common.settings import _ENV_FIELDS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_configuration_table_names_every_setting() -> None:
    table = README[README.index("## Configuration") : README.index("`cqrs migrate` creates")]
    # `CQRS_X`, `CQRS_X[_FILE]` (with and without the suffix) and `CQRS_GRPC_*` (a family).
    named = [
        re.compile("^" + n.replace("[_FILE]", "(_FILE)?").replace("*", ".*") + "$")
        for n in re.findall(r"`(CQRS_[A-Z0-9_\[\]*]+)`", table)
    ]
    missing = [var for var in _ENV_FIELDS if not any(p.match(var) for p in named)]
    assert missing == [], f"settings the README's configuration table does not name: {missing}"


def test_the_migration_shown_is_the_newest() -> None:
    versions = sorted(
        (ROOT / "common" / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    )
    newest = versions[-1].name[:4]
    shown = set(
        re.findall(
            r"schema (?:upgraded from revision \(none\) to|already at revision) (\d{4})", README
        )
    )
    assert shown == {newest}, f"README shows {shown}, the newest migration is {newest}"
