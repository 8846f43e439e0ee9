"""API answers encoded by orjson: the standard library's encoder was a twentieth of the web's CPU for a
single-message POST /queue (BENCHMARKS.md, sixth round)."""

from __future__ import annotations

import json
from typing import Any

import flask
import orjson
from flask.json.provider import DefaultJSONProvider

# Dates and dataclasses go to Flask's own `default`, so an answer reads as Flask would have written it.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


def encode(obj: Any) -> bytes:
    """The body an API answer with `obj` has: its compact JSON, in its order, non-ASCII as UTF-8, a newline."""
    try:
        return orjson.dumps(obj, default=DefaultJSONProvider.default, option=_OPTIONS) + b"\n"
    except TypeError:  # what orjson refuses: an integer beyond 64 bits, nesting deeper than 254
        return (json.dumps(obj, default=DefaultJSONProvider.default, ensure_ascii=False, separators=(",", ":"))
                + "\n").encode()


class FastJSONProvider(DefaultJSONProvider):
    """Flask's default JSON provider, whose `jsonify` encodes with orjson, non-ASCII text as UTF-8."""

    # The base class types its app as Flask's sansio `App` (shared with Quart), whose `response_class` is
    # werkzeug's sansio Response; this provider is only ever installed on a `flask.Flask`.
    _app: flask.Flask

    def response(self, *args: Any, **kwargs: Any) -> flask.Response:
        """`jsonify`'s answer: the compact JSON of the arguments, in their order, and a newline."""
        body = encode(self._prepare_response_obj(args, kwargs))
        return self._app.response_class(body, mimetype=self.mimetype)
