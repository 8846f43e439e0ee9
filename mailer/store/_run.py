"""Running named queries: parameters in, rows (as dicts) out."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import orjson
import psycopg
from psycopg import pq
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mailer.store.queries import query


def _default(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


# Dates, times and dataclasses go to _default, which stores datetimes only, as before.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _dumps(value: Any) -> bytes | str:
    try:
        return orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS)
    except TypeError:  # what orjson refuses (a client's JSON may hold an integer beyond 64 bits, deep nesting)
        return json.dumps(value, default=_default)


def jsonb(value: Any) -> Jsonb:
    """A value to pass as a jsonb parameter (uuids and datetimes become strings)."""
    return Jsonb(value, dumps=_dumps)


def all_rows(conn: psycopg.Connection, query_name: str, /, **params: Any) -> list[dict[str, Any]]:
    """Run a named query and return every row."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(query_name), params)  # type: ignore[arg-type]  # named queries are trusted files
        # (pgresult, not description: that builds a Column per column, a tenth of a single POST /queue's insert)
        result = cur.pgresult
        return cur.fetchall() if result is not None and result.status == pq.ExecStatus.TUPLES_OK else []


def one_row(conn: psycopg.Connection, query_name: str, /, **params: Any) -> dict[str, Any] | None:
    """Run a named query and return its first row, if any."""
    rows = all_rows(conn, query_name, **params)
    return rows[0] if rows else None
