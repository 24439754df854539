"""Backing-store failures become UNAVAILABLE; anything else is left alone."""

from __future__ import annotations

import asyncpg
import redis.exceptions

from common.errors import Unavailable
from read_server.translate import translate


def test_redis_outages_are_unavailable() -> None:
    for exc in (
        redis.exceptions.ConnectionError("refused"),
        redis.exceptions.TimeoutError("slow"),
        redis.exceptions.BusyLoadingError("loading"),
    ):
        assert isinstance(translate(exc), Unavailable)


def test_postgres_outages_are_unavailable() -> None:
    for exc in (
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
        asyncpg.exceptions.CannotConnectNowError("starting"),
        asyncpg.exceptions.TooManyConnectionsError("full"),
        asyncpg.exceptions.QueryCanceledError("statement timeout"),
    ):
        assert isinstance(translate(exc), Unavailable)


def test_other_errors_are_not_translated() -> None:
    assert translate(redis.exceptions.ResponseError("ERR bug in script")) is None
    assert translate(asyncpg.exceptions.UndefinedTableError("no table")) is None
    assert translate(ValueError("bug")) is None
