"""Record Mailjet's tracking events: each once, matched now or as soon as its message is known."""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from mailer import store
from mailer.mailjet.events import MailjetEvent

_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")
# How orjson writes a NUL; it refuses lone surrogates (and integers beyond 64 bits), and writes NaN and the
# infinities as null, as _storable does.
_NUL_JSON = b"\\u0000"


@dataclasses.dataclass(frozen=True)
class Recorded:
    """How many events came in, were new (not duplicates), and matched a recipient."""

    received: int
    new: int
    matched: int


def record_events(conn: psycopg.Connection, events: Sequence[MailjetEvent]) -> Recorded:
    """Store new events and move their recipients' statuses forward, in one statement."""
    rows = event_rows(events)
    new, matched = store.record_mailjet_events(conn, events=rows) if rows else (0, 0)
    return Recorded(received=len(events), new=new, matched=matched)


def event_rows(events: Sequence[MailjetEvent]) -> list[dict[str, Any]]:
    """The rows of record_mailjet_events for these events, each fingerprint once."""
    unique = {event.fingerprint: event for event in events}
    rows = [
        {"fingerprint": event.fingerprint, "name": event.name, "status": event.status,
         "occurred_at": event.at, "message_id": _bigint(event.message_id),
         "custom_id": event.custom_id, "job_id": _job_id(event.custom_id),
         "email": event.email, "suppresses": event.suppresses, "payload": event.raw, "dated": event.dated}
        for event in unique.values()
    ]
    # Walking every value costs more than the rest of the parsing: only when the JSON text of the batch shows
    # something Postgres cannot store (a false alarm, e.g. a literal backslash and "u0000", only costs the walk).
    # orjson, not json: the check costs 1 µs per event instead of 8 (a fifth of the parsing).
    try:
        unstorable = _NUL_JSON in orjson.dumps(rows, default=str)
    except TypeError:  # a lone surrogate, or an integer beyond 64 bits (walked for nothing: kept as it is)
        unstorable = True
    return [_storable(row) for row in rows] if unstorable else rows


def _bigint(message_id: int | None) -> int | None:
    """A MessageID Postgres can store; one outside bigint is no id of ours (kept, never matched)."""
    return message_id if message_id is not None and _BIGINT_MIN <= message_id <= _BIGINT_MAX else None


def _storable(value: Any) -> Any:
    """`value` with what Postgres cannot store replaced: NUL and lone surrogates in strings
    (by U+FFFD), NaN and infinities (by null). The event must be kept, not retried forever."""
    if isinstance(value, str):
        return _UNSTORABLE_CHARS.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _job_id(custom_id: str | None) -> uuid.UUID | None:
    """Our CustomID is the job id; other CustomIDs (not ours) match nothing."""
    if not custom_id:
        return None
    try:
        return uuid.UUID(custom_id)
    except ValueError:
        return None
