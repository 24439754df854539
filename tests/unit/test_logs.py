"""common.logs: one JSON object per line off a terminal, text on one, and the levels."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator

import pytest

from common import logs


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as sys.stderr does in one."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide logging: put back what pytest had."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = [*logs.OWN_PACKAGES, "alembic", "grpc", "asyncio", "common.rpc.access"]
    levels = {name: logging.getLogger(name).level for name in names}
    hooks = sys.excepthook, threading.excepthook
    try:
        yield
    finally:
        sys.excepthook, threading.excepthook = hooks
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
        logging.captureWarnings(False)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    """Every line of ``stream`` parsed as JSON (fails on any line that is not)."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_fields() -> None:
    out = io.StringIO()
    assert logs.configure("write-server", stream=out) == "json"
    log = logging.getLogger("write_server.test")
    log.info("hello %s", "world")
    log.warning(
        "slow call\nsecond line",
        extra={"method": "/shop.v1.X/Y", "request_id": "r-1", "code": "OK", "duration_ms": 1.5},
    )
    first, second = lines(out)
    assert set(first) == {"time", "level", "process", "pid", "logger", "message"}
    assert first["level"] == "INFO"
    assert first["process"] == "write-server"
    assert first["logger"] == "write_server.test"
    assert first["message"] == "hello world"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["time"]))
    assert second["message"] == "slow call\nsecond line"  # one line on the wire all the same
    assert (second["method"], second["request_id"], second["code"], second["duration_ms"]) == (
        "/shop.v1.X/Y",
        "r-1",
        "OK",
        1.5,
    )


def test_an_exception_is_a_field_of_its_line() -> None:
    out = io.StringIO()
    logs.configure("projector", stream=out, fmt="json")
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("projector.test").exception("it failed")
    (entry,) = lines(out)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "it failed"
    exception = str(entry["exception"])
    assert exception.startswith("Traceback (most recent call last)")
    assert exception.endswith("ValueError: bad value")


def test_text_on_a_terminal_and_json_when_asked() -> None:
    tty = Terminal()
    assert logs.configure("read-server", stream=tty) == "text"
    logging.getLogger("read_server.test").info(
        "listening", extra={"method": "/a/B", "request_id": "has space"}
    )
    text = tty.getvalue()
    assert not text.startswith("{")
    assert 'INFO read_server.test: listening method=/a/B request_id="has space"' in text

    forced = Terminal()
    assert logs.configure("read-server", stream=forced, fmt="JSON") == "json"
    logging.getLogger("read_server.test").info("x")
    assert lines(forced)[0]["message"] == "x"

    piped = io.StringIO()
    assert logs.configure("read-server", stream=piped, fmt="text") == "text"


def test_third_party_loggers_are_quiet_below_warning_unless_asked() -> None:
    out = io.StringIO()
    logs.configure("migrate", stream=out, level="DEBUG")
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")
    logging.getLogger("asyncio").debug("chatter")
    logging.getLogger("alembic.runtime.migration").warning("a real warning")
    logging.getLogger("common.db").debug("ours at DEBUG")
    assert [e["message"] for e in lines(out)] == ["a real warning", "ours at DEBUG"]

    out = io.StringIO()
    logs.configure("migrate", stream=out, levels="alembic=INFO")
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")
    logging.getLogger("grpc").info("still quiet")
    assert [e["message"] for e in lines(out)] == ["Context impl PostgresqlImpl."]

    out = io.StringIO()
    logs.configure("migrate", stream=out, third_party="INFO", level="ERROR")
    logging.getLogger("grpc").info("asked for")
    logging.getLogger("common.db").warning("below our level")
    assert [e["message"] for e in lines(out)] == ["asked for"]


def test_a_higher_own_level_raises_the_third_party_one_too() -> None:
    out = io.StringIO()
    logs.configure("seed", stream=out, level="ERROR")
    logging.getLogger("asyncpg").warning("hidden")
    assert out.getvalue() == ""


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="CQRS_LOG_LEVEL="):
        logs.configure("x", stream=io.StringIO(), level="LOUD")
    with pytest.raises(ValueError, match="CQRS_LOG_FORMAT="):
        logs.configure("x", stream=io.StringIO(), fmt="xml")
    with pytest.raises(ValueError, match="CQRS_LOG_LEVELS"):
        logs.configure("x", stream=io.StringIO(), levels="alembic")
    with pytest.raises(ValueError, match="CQRS_LOG_LEVEL_THIRD_PARTY"):
        logs.configure("x", stream=io.StringIO(), third_party="chatty")


def test_json_line_looks_like_a_record() -> None:
    logs.configure("up", stream=io.StringIO(), fmt="json")
    entry = json.loads(logs.json_line("started", level="ERROR"))
    assert entry["process"] == "up" and entry["level"] == "ERROR"
    assert entry["message"] == "started" and entry["logger"] == "up"
    other = json.loads(logs.json_line("stray", process="projector", logger="stdout"))
    assert (other["process"], other["logger"]) == ("projector", "stdout")
