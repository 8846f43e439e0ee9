"""Structured logs: one JSON object per line, with the request id of the work being logged.

Every process (gunicorn and its app, `mailer worker`, the other commands) calls `configure()`, and
gunicorn.conf.py installs the same formatter through `gunicorn_logconfig()`, so all their lines share
one shape: `time`, `level`, `logger`, `message`, then the record's extra fields (`request_id`,
`job_id`, `app_id`, ...). Known secrets are masked in every line as a last line of defence; the code
itself logs ids, never keys, secrets, credentials or message contents.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import json
import logging
import re
import sys
import threading
import traceback
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from mailer.config import Settings

# A request id a caller may choose (X-Request-Id); anything else is replaced by a fresh one.
REQUEST_ID = re.compile(r"\A[A-Za-z0-9._-]{1,128}\Z")
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words
LEVEL = "INFO"
# Procrastinate writes three INFO lines for every task it runs (several a second, for the periodic
# ticks); mailer logs the work those tasks do (each job's steps, each webhook attempt) itself.
QUIET = {"procrastinate": "WARNING"}

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("mailer_request_id", default=None)
_secrets: tuple[str, ...] = ()  # longest first, each also as it reads inside a JSON string
_secrets_lock = threading.Lock()
# The attributes every LogRecord has; anything else on a record came through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def new_request_id() -> str:
    """A fresh request id (uuid4 hex)."""
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> str | None:
    """`value` if it is an acceptable request id (≤ 128 of A-Z a-z 0-9 . _ -), else None."""
    return value if value is not None and REQUEST_ID.match(value) else None


def current_request_id() -> str | None:
    """The request id of the work this thread (or task) is doing, if any."""
    return _request_id.get()


@contextlib.contextmanager
def request_context(request_id: str | None) -> Iterator[None]:
    """Log lines written inside carry `request_id` (unless they name another)."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def bind_request_id(request_id: str | None) -> contextvars.Token[str | None]:
    """Set the request id until `unbind_request_id(token)` (for hooks that cannot use a with block)."""
    return _request_id.set(request_id)


def unbind_request_id(token: contextvars.Token[str | None]) -> None:
    """Undo `bind_request_id`."""
    _request_id.reset(token)


def redact(values: Iterable[str | None]) -> None:
    """Mask these values (secrets from the configuration) wherever they would appear in a log line."""
    global _secrets
    with _secrets_lock:
        known = set(_secrets)
        for value in values:
            if value and len(value) >= MIN_SECRET_LENGTH:
                known.update((value, json.dumps(value, ensure_ascii=False)[1:-1]))
        _secrets = tuple(sorted(known, key=len, reverse=True))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def secrets_of(settings: Settings) -> list[str | None]:
    """The values in the configuration that must never be logged."""
    import psycopg.conninfo  # here: the formatter itself needs no database driver

    values = [settings.mailjet_api_secret, settings.events_auth, settings.operator_token, settings.secret_key]
    if settings.events_auth:
        values.append(settings.events_auth.partition(":")[2])
    for url in (settings.database_url, settings.direct_database_url, settings.database_replica_url):
        if url:
            try:
                values.append(psycopg.conninfo.conninfo_to_dict(url).get("password"))  # type: ignore[arg-type]
            except psycopg.ProgrammingError:
                values.append(url)
    return values


# One encoder for every line: json.dumps would build one per call for these options.
_encode_stdlib = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":")).encode


# Dataclasses go to _json_default as before (str); orjson would write them as objects.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def _encode(entry: dict[str, Any]) -> str:
    """`entry` as compact JSON with non-ASCII text as is; orjson writes what the standard library would."""
    try:
        return orjson.dumps(entry, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # what orjson refuses: an integer beyond 64 bits, a lone surrogate, deep nesting
        return _encode_stdlib(entry)


class JsonFormatter(logging.Formatter):
    """A LogRecord as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update((key, value) for key, value in vars(record).items()
                     if key not in _STANDARD and not key.startswith("_"))
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        line = _encode(entry)
        for secret in _secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    """The date and time of day of a whole second since 1970, UTC."""
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _utc_time(created: float) -> str:
    """`created` in RFC 3339 with milliseconds, UTC (as isoformat gives it); the date and time of day
    are formatted once per second, not once per line."""
    second = int(created)
    microsecond = round((created - second) * 1e6)  # rounded as datetime.fromtimestamp rounds it
    if microsecond == 1_000_000:
        second, microsecond = second + 1, 0
    return f"{_utc_second(second)}.{microsecond // 1000:03d}+00:00"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _is_ours(handler: logging.Handler) -> bool:
    return isinstance(handler.formatter, JsonFormatter)


def configure(settings: Settings | None = None, level: str = LEVEL) -> None:
    """Send the root logger's lines to stderr as JSON, masking the secrets in `settings`; idempotent,
    and leaves other handlers alone."""
    if settings is not None:
        redact(secrets_of(settings))
    _skip_unused_record_fields()
    root = logging.getLogger()
    if not any(_is_ours(handler) for handler in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    for name, quiet_level in QUIET.items():
        logging.getLogger(name).setLevel(quiet_level)


def gunicorn_logconfig(level: str = LEVEL) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its own lines as JSON on stderr, and no access log (the app logs
    each request itself, with its request id and app)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": {"()": f"{__name__}._StderrHandler", "formatter": "json"}},
        "root": {"level": level, "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": False},
            **{name: {"level": quiet_level} for name, quiet_level in QUIET.items()},
        },
    }


def _skip_unused_record_fields() -> None:
    """Spare every record the caller's frame, thread, process and multiprocessing lookups, which no line
    shows (the Python docs' "Optimization" settings): a batch of 500 logs 500 `job queued` lines."""
    logging._srcfile = None  # type: ignore[attr-defined]  # documented: https://docs.python.org/3/howto/logging.html#optimization
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
