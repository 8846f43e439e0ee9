"""POST /queue's fast path: the plain message loaded without marshmallow's per-field machinery.

It earns its place in batches. Against MessageSchema with one reused instance (api/queue.py), the web spent
40 µs of CPU per email of a 500-message batch with it and 84 µs without (PostgreSQL 50 and 52 µs), and 1.00
against 1.11 ms per single message (`bench/queue_cost.py --seconds 6 --rounds 3`, rate limit on, medians of
three alternating runs, 2026-12-05; the load alone: 7.5 µs against 41 µs a message).

`load` handles the common message — addresses, subject, text/html or a stored template with its variables,
metadata, priority — and returns exactly what `MessageSchema().load()` returns, or None whenever it is not
sure: any other field, any value of an unexpected type, anything invalid. MessageSchema then decides, with
its error details. (Templates take it too: a 500-message templated batch spent some 45 µs a message more in
marshmallow, as much as rendering it.)

The checks are MessageSchema's own: each value goes through the validators of the schema's field, and
the whole message through its schema validator. tests/unit/test_fast_message.py checks that both
loaders agree on valid, invalid and randomly mutated messages, and that no field is left unknown here.
"""

from __future__ import annotations

import uuid
from typing import Any

from marshmallow import ValidationError, fields

from mailer.api import schemas

_SCHEMA = schemas.MessageSchema()
_FIELDS = _SCHEMA.fields
_ADDRESS_FIELDS = schemas.AddressSchema().fields
_TEMPLATE_FIELDS = schemas.TemplateRefSchema().fields
# Input keys this path understands; any other key (or a field it does not handle) goes to marshmallow.
HANDLED = frozenset({
    "from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "metadata", "priority", "template", "variables",
})
# MessageSchema's fields as this module knows them (a test fails when the schema gains one).
KNOWN_FIELDS = (
    "from_", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "template_id", "variables",
    "template", "attachments", "headers", "metadata", "priority", "send_at",
)


class _NotPlain(Exception):
    """Not a plain, valid message: let marshmallow load it."""


def load(data: Any) -> dict[str, Any] | None:
    """What MessageSchema().load(data) returns, or None when the fast path cannot tell."""
    if not isinstance(data, dict) or not HANDLED.issuperset(data):
        return None
    try:
        loaded = {
            "from_": _address(_required(data, "from")),
            "to": _addresses(_required(data, "to"), "to"),
            "cc": _addresses(data["cc"], "cc") if "cc" in data else [],
            "bcc": _addresses(data["bcc"], "bcc") if "bcc" in data else [],
            "reply_to": None if data.get("reply_to") is None else _address(data["reply_to"]),
            # Required unless the message names a template: _check_whole_message decides, as in the schema.
            "subject": _optional_string(data, "subject"),
            "text": _optional_string(data, "text"),
            "html": _optional_string(data, "html"),
            "template_id": None,
            "variables": None if data.get("variables") is None else _variables(data["variables"]),
            "template": None if data.get("template") is None else _template(data["template"]),
            "attachments": [],
            "headers": {},
            "metadata": _metadata(data["metadata"]) if "metadata" in data else {},
            "priority": _string(data["priority"], _FIELDS["priority"]) if "priority" in data else "transactional",
            "send_at": None,
        }
        _SCHEMA._check_whole_message(loaded)
    except (_NotPlain, ValidationError):
        return None
    return loaded


def load_batch(data: Any) -> dict[str, Any] | None:
    """What BatchSchema().load(data) returns, or None when the fast path cannot tell."""
    if not isinstance(data, dict) or data.keys() != {"messages"}:
        return None
    messages = data["messages"]
    if not isinstance(messages, list) or not 1 <= len(messages) <= schemas.rules.MAX_BATCH:
        return None
    loaded = []
    for message in messages:
        one = load(message)
        if one is None:
            return None
        loaded.append(one)
    return {"messages": loaded}


def _required(data: dict[str, Any], key: str) -> Any:
    if data.get(key) is None:  # missing, or null (which no required field allows)
        raise _NotPlain
    return data[key]


def _validated(value: Any, field: fields.Field) -> Any:
    for validator in field.validators:
        validator(value)  # ValidationError: not valid (marshmallow will say why)
    return value


def _string(value: Any, field: fields.Field) -> str:
    if not isinstance(value, str):
        raise _NotPlain
    return _validated(value, field)  # type: ignore[no-any-return]


def _optional_string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else _string(value, _FIELDS[key])


def _address(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not {"email", "name"}.issuperset(value) or "email" not in value:
        raise _NotPlain
    name = value.get("name")
    return {
        "email": _string(value["email"], _ADDRESS_FIELDS["email"]),
        "name": None if name is None else _string(name, _ADDRESS_FIELDS["name"]),
    }


def _addresses(value: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _NotPlain
    return _validated([_address(item) for item in value], _FIELDS[key])  # type: ignore[no-any-return]


def _metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _NotPlain
    return _validated(dict(value), _FIELDS["metadata"])  # type: ignore[no-any-return]


def _variables(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _NotPlain
    return dict(value)


def _template(value: Any) -> dict[str, Any]:
    """A stored template's reference, as TemplateRefSchema loads it: {"id": UUID, "version": int or None}."""
    if not isinstance(value, dict) or not {"id", "version"}.issuperset(value) or not isinstance(value.get("id"), str):
        raise _NotPlain
    version = value.get("version")
    if version is not None and type(version) is not int:
        raise _NotPlain
    try:
        template_id = uuid.UUID(value["id"])
    except ValueError:
        raise _NotPlain from None
    return {"id": template_id, "version": None if version is None else _validated(version, _TEMPLATE_FIELDS["version"])}
