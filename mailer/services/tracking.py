"""Record Mailjet's tracking events: each once, matched now or as soon as its message is known."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer import store
from mailer.mailjet.events import MailjetEvent

_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")
# How json.dumps writes what _storable replaces: NUL and surrogates as escapes, non-finite floats bare.
_UNSTORABLE_JSON = re.compile(r"\\u(?:0000|d[89a-f][0-9a-f]{2})|NaN|Infinity")


@dataclasses.dataclass(frozen=True)
class Recorded:
    """How many events came in, were new (not duplicates), and matched a recipient."""

    received: int
    new: int
    matched: int


def record_events(conn: psycopg.Connection, events: Sequence[MailjetEvent]) -> Recorded:
    """Store new events and move their recipients' statuses forward."""
    rows = event_rows(events)
    inserted = store.insert_mailjet_events(conn, events=rows) if rows else []
    matched = sorted({row["recipient_id"] for row in inserted if row["recipient_id"] is not None})
    jobs = sorted({row["recipient_job_id"] for row in inserted if row["recipient_id"] is not None})
    store.advance_recipient_statuses(conn, recipient_ids=matched, job_ids=jobs)
    # Hard bounces, blocks, spam complaints and unsubscribes put the address on the app's list.
    suppressing = [row["id"] for row in inserted if row["recipient_id"] is not None and row["suppresses"]]
    if suppressing:  # rare: most events (sent, opens, clicks) suppress nothing
        store.suppress_from_events(conn, event_ids=suppressing)
    return Recorded(received=len(events), new=len(inserted), matched=sum(
        1 for row in inserted if row["recipient_id"] is not None))


def event_rows(events: Sequence[MailjetEvent]) -> list[dict[str, Any]]:
    """The rows of insert_mailjet_events for these events, each fingerprint once."""
    unique = {event.fingerprint: event for event in events}
    rows = [
        {"fingerprint": event.fingerprint, "name": event.name, "status": event.status,
         "occurred_at": event.at, "message_id": _bigint(event.message_id),
         "custom_id": event.custom_id, "job_id": _job_id(event.custom_id),
         "email": event.email, "suppresses": event.suppresses, "payload": event.raw, "dated": event.dated}
        for event in unique.values()
    ]
    # Walking every value costs more than the rest of the parsing: only when the JSON text of the batch
    # shows something Postgres cannot store (a false alarm, e.g. "NaN" in a string, only costs the walk).
    if _UNSTORABLE_JSON.search(json.dumps(rows, default=str)):
        rows = [_storable(row) for row in rows]
    return rows


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
