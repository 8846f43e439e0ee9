"""Stalled-job recovery: nothing a killed worker held is lost, nothing it sent is sent again."""

from __future__ import annotations

import dataclasses
import logging

import psycopg

from mailer import jobqueue, store
from mailer.config import Settings
from mailer.services import wakeups
from mailer.store import recovery as recovery_store

log = logging.getLogger(__name__)

# A wake-up is normally picked up within milliseconds; give it this long before calling it lost.
UNATTENDED_GRACE_S = 10.0
# How far back to look for events that missed their message by a race.
LATE_EVENT_WINDOW_S = 3600.0


@dataclasses.dataclass(frozen=True)
class Recovered:
    """What one sweep found."""

    stalled: int
    unattended: int
    late_events: int


def sweep(conn: psycopg.Connection, settings: Settings) -> Recovered:
    """Requeue stalled sends, wake senders for due jobs nothing will pick up, match late events."""
    stalled = recovery_store.requeue_stalled_jobs(conn, stalled_after_s=settings.send_stalled_after_s)
    unattended = recovery_store.count_unattended_due_jobs(
        conn, task_name=jobqueue.SEND_TASK, grace_s=UNATTENDED_GRACE_S
    )
    for row in stalled:
        log.warning("job queued", extra={
            "job_id": str(row["id"]), "app_id": row["app_id"], "request_id": row["request_id"], "status": "queued",
            "reason": "recovered: the sending worker stopped answering",
        })
    due = [(row["priority"], None) for row in stalled]
    due += [(priority, None) for priority, count in unattended.items() for _ in range(count)]
    wakeups.wake_senders(conn, due, settings.send_batch_size)
    late = recovery_store.match_late_events(conn, window_s=LATE_EVENT_WINDOW_S)
    store.advance_recipient_statuses(conn, recipient_ids=sorted({row["recipient_id"] for row in late}))
    store.suppress_from_events(conn, event_ids=[row["id"] for row in late])
    if stalled or unattended:
        log.warning(
            "recovered %d stalled sends; woke senders for %d unattended jobs", len(stalled), sum(unattended.values())
        )
    return Recovered(stalled=len(stalled), unattended=sum(unattended.values()), late_events=len(late))
