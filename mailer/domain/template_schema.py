"""A template's variables schema: checked with `jsonschema`, applied per message with `jsonschema_rs` first.

`jsonschema` (Python) chooses the draft from `$schema` (2020-12 by default) and checks the schema against its
metaschema, once. Variables are validated and the errors worded by `jsonschema_rs` alone (a missing property
in our own words): ~1 µs a receipt against ~150 µs (bench/render_cost.py), and its regex engine never
backtracks, where Python's re, running a `pattern` such as `^(a+)+$`, may take minutes on 40 characters. Both
follow the same drafts; tests/unit/test_templating.py keeps them in agreement on every keyword a template schema
is likely to use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import jsonschema_rs

MAX_MESSAGE = 300  # characters of one error message (a batch of 500 may carry one per message)
# What makes jsonschema_rs run a pattern in its backtracking engine (fancy-regex) instead of the linear one:
# backreferences, lookarounds, atomic groups, conditionals. Each value then costs up to ~40 ms before the
# engine gives up, and a list of 1,000 valid values 9 s; a variables schema has no need of them. An escaped
# character (`\(`) is skipped first; one inside a character class (`[(?=]`) is refused too, to be safe.
BACKTRACKING = re.compile(r"\\[1-9k]|\(\?(?:[=!>(]|<[=!]|P=)")
ESCAPED = re.compile(r"\\.", re.DOTALL)


def path(root: str, keys: Iterable[Any]) -> str:
    """`variables.items[2].price` from the keys ["items", 2, "price"]."""
    out = root
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else f".{key}"
    return out


def short(message: str) -> str:
    """A message as a client gets it: the value it quotes may be a whole variable, so at most MAX_MESSAGE."""
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def _refuse_backtracking(schema: Mapping[str, Any]) -> None:
    """ValueError naming the first `pattern` or `patternProperties` key that needs a backtracking engine."""
    stack: list[tuple[Any, list[Any]]] = [(schema, [])]
    while stack:
        node, keys = stack.pop()
        if isinstance(node, list):
            stack.extend((item, [*keys, n]) for n, item in enumerate(node))
            continue
        if not isinstance(node, Mapping):
            continue
        patterns = [([*keys, "pattern"], node["pattern"])] if isinstance(node.get("pattern"), str) else []
        if isinstance(node.get("patternProperties"), Mapping):
            patterns += [([*keys, "patternProperties", key], key) for key in node["patternProperties"]]
        for where, pattern in patterns:
            found = BACKTRACKING.search(ESCAPED.sub(lambda m: m[0] if m[0][1] in "123456789k" else "_", pattern))
            if found:
                raise ValueError(f"{path('schema', where)}: {found[0]!r}: backreferences and lookarounds are not "
                                 "allowed (they make a regular expression backtrack)")
        stack.extend((value, [*keys, key]) for key, value in node.items())


class VariablesSchema:
    """One template version's JSON Schema of its variables, compiled once; safe to share between threads."""

    __slots__ = ("_fast",)

    def __init__(self, schema: Mapping[str, Any], max_bytes: int) -> None:
        """Compile `schema`; ValueError with a message for the client when it is too long or not valid."""
        if not isinstance(schema, Mapping):
            raise ValueError("not a JSON Schema: an object is expected")
        try:
            size = len(json.dumps(schema).encode())
        except (TypeError, ValueError, RecursionError):
            raise ValueError("not a JSON Schema: not JSON") from None
        if size > max_bytes:
            raise ValueError(f"the schema is longer than {max_bytes} bytes")
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {path('schema', exc.absolute_path)}: {exc.message}") from None
        _refuse_backtracking(schema)
        try:
            # Formats are annotations only, as in the Python validator without a format checker; no $ref is
            # ever fetched from the network (a schema is the app's input, the fetch would be ours).
            self._fast = jsonschema_rs.validator_for(dict(schema), validate_formats=False, offline=True)
        except (jsonschema_rs.ValidationError, ValueError) as exc:
            raise ValueError(f"the schema cannot be used: {str(exc).splitlines()[0]}") from None

    def problems(self, variables: Mapping[str, Any]) -> list[str]:
        """Each way `variables` break the schema, named by JSON path; [] when they fit."""
        # Worded by jsonschema_rs too: the Python validator would run the schema's `pattern`s with Python's re,
        # which backtracks (`^(a+)+$` against 40 a's and a '!': minutes); jsonschema_rs's regex engine does not.
        try:
            if self._fast.is_valid(variables):
                return []
            errors = sorted(self._fast.iter_errors(variables), key=lambda e: [str(k) for k in e.instance_path])
            return [short(_worded(error)) for error in errors]
        except ValueError as exc:  # a value JSON cannot hold (never from a JSON request)
            return [short(f"variables: not JSON: {exc}")]


def _worded(error: jsonschema_rs.ValidationError) -> str:
    """One violation as a client reads it; a missing property in the words a template's own missing name gets
    (`variables.name: is required`), so that a name both the template and the schema require is named once."""
    if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Required):
        return f"{path('variables', [*error.instance_path, error.kind.property])}: is required"
    return f"{path('variables', error.instance_path)}: {error.message}"
