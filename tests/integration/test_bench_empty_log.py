"""`cqrs bench --no-seed` on a database whose log is empty says so in one line (it used to
crash with a TypeError while waiting for the projections)."""

from __future__ import annotations

import pytest

from bench import run as bench_run
from common.settings import Settings

pytestmark = pytest.mark.integration


async def test_an_empty_log_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(SystemExit, match="the event log is empty: run `cqrs seed`"):
        await bench_run._caught_up(settings)
