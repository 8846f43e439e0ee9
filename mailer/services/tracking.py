"""Record Mailjet's tracking events: each once, matched now or as soon as its message is known."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

import psycopg

from mailer import store
from mailer.mailjet.events import MailjetEvent


@dataclasses.dataclass(frozen=True)
class Recorded:
    """How many events came in, were new (not duplicates), and matched a recipient."""

    received: int
    new: int
    matched: int


def record_events(conn: psycopg.Connection, events: Sequence[MailjetEvent]) -> Recorded:
    """Store new events and move their recipients' statuses forward."""
    unique = {event.fingerprint: event for event in events}
    rows = [
        {"fingerprint": event.fingerprint, "name": event.name, "status": event.status,
         "occurred_at": event.at, "message_id": event.message_id, "custom_id": event.custom_id,
         "job_id": _job_id(event.custom_id), "email": event.email, "suppresses": event.suppresses,
         "payload": event.raw}
        for event in unique.values()
    ]
    inserted = store.insert_mailjet_events(conn, events=rows) if rows else []
    matched = sorted({row["recipient_id"] for row in inserted if row["recipient_id"] is not None})
    store.advance_recipient_statuses(conn, recipient_ids=matched)
    return Recorded(received=len(events), new=len(inserted), matched=sum(
        1 for row in inserted if row["recipient_id"] is not None))


def _job_id(custom_id: str | None) -> uuid.UUID | None:
    """Our CustomID is the job id; other CustomIDs (not ours) match nothing."""
    if not custom_id:
        return None
    try:
        return uuid.UUID(custom_id)
    except ValueError:
        return None
