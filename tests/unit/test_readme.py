"""The docs stay true to the code where it can be checked without running anything: the
configuration page names every setting, and the migration they say `cqrs migrate` reaches is
the newest one; the README stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

from common.settings import _ENV_FIELDS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_the_configuration_table_names_every_setting() -> None:
    page = (DOCS / "configuration.md").read_text()
    table = page[: page.index("`cqrs migrate` creates")]
    # `CQRS_X`, `CQRS_X[_FILE]` (with and without the suffix) and `CQRS_GRPC_*` (a family).
    named = [
        re.compile("^" + n.replace("[_FILE]", "(_FILE)?").replace("*", ".*") + "$")
        for n in re.findall(r"`(CQRS_[A-Z0-9_\[\]*]+)`", table)
    ]
    missing = [var for var in _ENV_FIELDS if not any(p.match(var) for p in named)]
    assert missing == [], f"settings docs/configuration.md does not name: {missing}"


def test_the_migration_shown_is_the_newest() -> None:
    versions = sorted(
        (ROOT / "common" / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    )
    newest = versions[-1].name[:4]
    text = "".join(p.read_text() for p in sorted(DOCS.glob("*.md")))
    pattern = r"schema (?:upgraded from revision \(none\) to|already at revision) (\d{4})"
    shown = set(re.findall(pattern, text))
    assert shown == {newest}, f"the docs show {shown}, the newest migration is {newest}"


def test_the_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert readme.splitlines()[3:5] == [
        "make run    # installs what is missing (.venv, deps), migrates, starts write server, "
        "read server and projector",
        "make test   # installs what is missing, runs every test (unit, integration, e2e) "
        "against local PostgreSQL + Redis",
    ]
