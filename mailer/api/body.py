"""Reading request bodies: JSON or a clear 400/422, never a 500."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import flask

from mailer.domain import errors, json_depth

# A lone surrogate escape (e.g. "\ud800") parses, but it is not Unicode text: it cannot be
# encoded as UTF-8 nor stored by Postgres.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 parses as inf, which Postgres's jsonb cannot store.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def too_deep(limit: int) -> errors.MalformedRequest:
    """The 400 for a body nested deeper than MAILER_MAX_JSON_DEPTH."""
    return errors.MalformedRequest(
        f"the request body nests deeper than {limit} levels (MAILER_MAX_JSON_DEPTH)",
        {"_body": [f"nested deeper than {limit} levels"]},
    )


def max_depth() -> int:
    """MAILER_MAX_JSON_DEPTH of this app."""
    return int(flask.current_app.extensions["mailer.settings"].max_json_depth)


def json_body() -> Any:
    """The request body parsed as JSON (MalformedRequest when it is not, or nests too deep)."""
    raw = flask.request.get_data(cache=True)
    if not raw.strip():
        raise errors.MalformedRequest("the request body is empty; send JSON")
    limit = max_depth()
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        json_depth.check(raw, body, limit)
    except (json_depth.TooDeep, RecursionError):  # RecursionError: deeper than Python's limit, so than ours
        raise too_deep(limit) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.MalformedRequest(f"the request body is not valid JSON: {_short(exc)}") from None
    if "\\u" not in text:
        # Neither a lone surrogate nor a NUL can arrive without a \u escape: strict UTF-8 decoding refuses
        # encoded surrogates and json.loads refuses raw control characters. Spares walking a big batch.
        return body
    strings = list(_strings(body))
    if any(_SURROGATE.search(value) for value in strings):
        raise errors.MalformedRequest("the request body is not UTF-8 text: it has a lone surrogate (\\ud800-\\udfff)")
    if any("\x00" in value for value in strings):
        # Postgres cannot store U+0000 in text or jsonb.
        raise errors.ValidationFailed("strings must not contain NUL (\\u0000)", {"_body": ["contains \\u0000"]})
    return body


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, object keys included (no recursion: depth is free)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _short(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0][:200]
