"""Stalled-job recovery: nothing a killed worker held is lost, nothing it sent is sent again."""

from __future__ import annotations

import dataclasses
import logging

import psycopg

from mailer import jobqueue
from mailer.config import Settings
from mailer.services import wakeups
from mailer.store import recovery as store

log = logging.getLogger(__name__)

# A wake-up is normally picked up within milliseconds; give it this long before calling it lost.
UNATTENDED_GRACE_S = 10.0


@dataclasses.dataclass(frozen=True)
class Recovered:
    """What one sweep found."""

    stalled: int
    unattended: int


def sweep(conn: psycopg.Connection, settings: Settings) -> Recovered:
    """Requeue stalled sends and wake senders for due jobs that nothing will pick up."""
    stalled = store.requeue_stalled_jobs(conn, stalled_after_s=settings.send_stalled_after_s)
    unattended = store.count_unattended_due_jobs(conn, task_name=jobqueue.SEND_TASK, grace_s=UNATTENDED_GRACE_S)
    due = [(row["priority"], None) for row in stalled]
    due += [(priority, None) for priority, count in unattended.items() for _ in range(count)]
    wakeups.wake_senders(conn, due, settings.send_batch_size)
    if stalled or unattended:
        log.warning(
            "recovered %d stalled sends; woke senders for %d unattended jobs", len(stalled), sum(unattended.values())
        )
    return Recovered(stalled=len(stalled), unattended=sum(unattended.values()))
