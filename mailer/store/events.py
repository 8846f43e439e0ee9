"""Mailjet's tracking events and the recipient statuses they move."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run


def record_mailjet_events(conn: psycopg.Connection, *, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Store new events (duplicates dropped) and apply the matched ones, in one statement; (new, matched)."""
    undated = sorted({event["fingerprint"] for event in events if event.get("dated") is False})
    [row] = _run.all_rows(conn, "record_mailjet_events", events=_run.jsonb(list(events)), undated=undated)
    return row["new_events"], row["matched_events"]


@dataclasses.dataclass(frozen=True)
class AppliedEvents:
    """Events matched late: their ids, and the recipients they belong to with their jobs."""

    event_ids: list[int]
    recipient_ids: list[int]
    job_ids: list[uuid.UUID]


def apply_pending_events(
    conn: psycopg.Connection, *, message_ids: Sequence[int], job_ids: Sequence[uuid.UUID]
) -> AppliedEvents:
    """Match waiting events to the recipients of these jobs that now have these MessageIDs."""
    if not message_ids:
        return AppliedEvents(event_ids=[], recipient_ids=[], job_ids=[])
    rows = _run.all_rows(conn, "apply_pending_events", message_ids=list(message_ids), job_ids=list(job_ids))
    return AppliedEvents(
        event_ids=sorted(row["id"] for row in rows), recipient_ids=sorted({row["recipient_id"] for row in rows}),
        job_ids=sorted({row["recipient_job_id"] for row in rows}),
    )


def advance_recipient_statuses(
    conn: psycopg.Connection, *, recipient_ids: Sequence[int], job_ids: Sequence[uuid.UUID]
) -> list[dict[str, Any]]:
    """Move recipients (of these jobs) to the best status among their events; the rows that changed."""
    if not recipient_ids:
        return []
    return _run.all_rows(conn, "advance_recipient_statuses", recipient_ids=list(recipient_ids), job_ids=list(job_ids))


def list_recipient_events(conn: psycopg.Connection, *, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every tracking event of a job's recipients, oldest first."""
    return _run.all_rows(conn, "list_recipient_events", job_id=job_id)
