"""Reading request bodies: JSON or a clear 400/422, never a 500."""

from __future__ import annotations

import json
import re
from typing import Any

import flask

from mailer.domain import errors

_NUL_ESCAPE = re.compile(r"\\u0000", re.IGNORECASE)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body() -> Any:
    """The request body parsed as JSON (MalformedRequest when it is not)."""
    raw = flask.request.get_data(cache=True)
    if not raw.strip():
        raise errors.MalformedRequest("the request body is empty; send JSON")
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise errors.MalformedRequest(f"the request body is not valid JSON: {_short(exc)}") from None
    if _NUL_ESCAPE.search(text):
        # Postgres cannot store U+0000 in text or jsonb.
        raise errors.ValidationFailed("strings must not contain NUL (\\u0000)", {"_body": ["contains \\u0000"]})
    return body


def _short(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0][:200]
