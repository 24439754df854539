"""Log output of every ``cqrs`` process: JSON lines for machines, text for people.

:func:`configure` (called once by ``cqrs/cli.py``) installs one handler on stderr:

- ``json``: one object per line with ``time`` (ISO-8601, UTC), ``level``, ``process``
  (the CLI command: write-server, read-server, projector, migrate, ...), ``pid``,
  ``logger``, ``message``, then whatever the call passed as ``extra`` (the RPC machinery
  passes ``method``, ``request_id``, ``code``, ``duration_ms``), and ``exception`` (the
  formatted traceback) when there is one;
- ``text``: ``time level logger: message key=value ...``, the traceback below;
- ``auto`` (the default): json unless stderr is a terminal.

Levels: our own packages log at ``log_level``; every other library (alembic, grpc,
asyncio, asyncpg, redis, ...) at ``log_level_third_party``, by default WARNING (or
``log_level`` when that is higher), so start-up output is ours; ``log_levels`` sets
single loggers (``alembic=INFO,common.rpc.access=DEBUG``) and wins over both.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

FORMATS = ("auto", "json", "text")
# Loggers under these names are ours; every other one is a third party's.
OWN_PACKAGES = ("common", "cqrs", "write_server", "read_server", "projector", "bench", "sandbox")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Attributes every LogRecord has: anything else on a record came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_active = "text"
_process = "cqrs"


def active_format() -> str:
    """The format :func:`configure` chose (``json`` or ``text``); ``text`` before that."""
    return _active


def resolve_format(wanted: str, stream: TextIO) -> str:
    """``json`` or ``text`` for ``wanted`` (auto: text only on a terminal)."""
    wanted = wanted.strip().lower() or "auto"
    if wanted not in FORMATS:
        raise ValueError(f"CQRS_LOG_FORMAT={wanted!r}: expected one of {', '.join(FORMATS)}")
    if wanted != "auto":
        return wanted
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def level_number(name: str, setting: str = "CQRS_LOG_LEVEL") -> int:
    """The ``logging`` level called ``name`` (any case); ValueError naming ``setting``."""
    upper = name.strip().upper()
    if upper == "WARN":
        upper = "WARNING"
    if upper not in _LEVELS:
        raise ValueError(f"{setting}={name!r}: expected one of {', '.join(_LEVELS)}")
    return int(getattr(logging, upper))


def parse_levels(spec: str) -> dict[str, int]:
    """``"alembic=INFO, grpc=DEBUG"`` as {logger: level}."""
    levels: dict[str, int] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        name, sep, level = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"CQRS_LOG_LEVELS: {item.strip()!r} is not logger=LEVEL")
        levels[name.strip()] = level_number(level, "CQRS_LOG_LEVELS")
    return levels


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "process": self.process,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info).rstrip()
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-02 10:11:12.345 INFO logger: message key=value``, traceback below."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        line = (
            f"{stamp}.{int(record.msecs):03d} {record.levelname} {record.name}: "
            f"{record.getMessage()}"
        )
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{key}={_text_value(v)}" for key, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info).rstrip()
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def iso_time(created: float) -> str:
    """``2026-01-02T10:11:12.345Z`` for a ``time.time()`` value."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the logging call passed as ``extra``, in the order it was given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _text_value(value: Any) -> str:
    text = str(value)
    return text if text.isprintable() and " " not in text and text else json.dumps(text)


def json_line(
    message: str, *, process: str | None = None, level: str = "INFO", logger: str = ""
) -> str:
    """A line as :class:`JsonFormatter` writes it, for output that is not a log record
    (a supervisor's messages, a child's stray output); ``process`` defaults to this one."""
    process = process or _process
    entry = {
        "time": iso_time(datetime.now(UTC).timestamp()),
        "level": level,
        "process": process,
        "pid": os.getpid(),
        "logger": logger or process,
        "message": message,
    }
    return json.dumps(entry, ensure_ascii=False)


def configure(
    process: str,
    *,
    level: str = "INFO",
    fmt: str = "auto",
    third_party: str = "",
    levels: str = "",
    stream: TextIO | None = None,
) -> str:
    """Send every log record to ``stream`` (default stderr) in the chosen format; set the
    levels (see the module docstring). Returns the format used: ``json`` or ``text``.
    Raises ValueError for a level or format that does not exist."""
    global _active, _process
    stream = sys.stderr if stream is None else stream
    chosen = resolve_format(fmt, stream)
    own = level_number(level)
    others = (
        level_number(third_party, "CQRS_LOG_LEVEL_THIRD_PARTY")
        if third_party.strip()
        else max(logging.WARNING, own)
    )
    overrides = parse_levels(levels)

    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(process) if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(others)
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(own)
    for name, value in overrides.items():
        logging.getLogger(name).setLevel(value)
    # warnings.warn output would otherwise be a bare line on stderr.
    logging.captureWarnings(True)
    if chosen == "json":
        _log_uncaught(process)
    _active, _process = chosen, process
    return chosen


def _log_uncaught(process: str) -> None:
    """Crashes as JSON lines too, so every line of a JSON stderr parses."""
    crash = logging.getLogger("cqrs.crash")

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        crash.critical("%s crashed: %s", process, exc, exc_info=(kind, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None:
            return
        crash.critical(
            "thread %s crashed: %s",
            args.thread.name if args.thread else "?",
            args.exc_value,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = hook
    threading.excepthook = thread_hook
