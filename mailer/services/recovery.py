"""Recovery: nothing a killed or hung worker held is lost, nothing it sent is sent again.

Takeover rules (take_over, every 2 s in every worker once its liveness connection has been up for the grace): a
sender is DEAD when nobody holds its advisory lock and it has not been seen for MAILER_SEND_RECONNECT_GRACE_S
(counted from the database's start at the earliest), HUNG when its lock is held but it has not been seen for
MAILER_SEND_LEASE_S (its liveness backend is then terminated). Either is retired, and its `sending` jobs go back
to the queue, to be checked with Mailjet by CustomID before any resend. LEGACY (sweep, every 5 s): a claim with
no sender (made by the release before sender liveness) older than MAILER_SEND_STALLED_AFTER_S."""

from __future__ import annotations

import dataclasses
import logging

import psycopg

from mailer import jobqueue, metrics, store
from mailer.config import Settings
from mailer.services import moves, wakeups
from mailer.store import recovery as recovery_store
from mailer.store import senders as senders_store

log = logging.getLogger(__name__)

# A wake-up is normally picked up within milliseconds; give it this long before calling it lost.
UNATTENDED_GRACE_S = 10.0
# How far back to look for events that missed their message by a race.
LATE_EVENT_WINDOW_S = 3600.0
# The takeover's transaction holds sender and job rows: it waits at most this long for a lock (a claim's fence at
# work; the next round tries again), and loses its session if paused this long between two statements.
TAKEOVER_LOCK_MS = 2000
TAKEOVER_IDLE_MS = 5000


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
            "reason": "recovered: claimed before sender liveness and older than MAILER_SEND_STALLED_AFTER_S",
        })
    due = [(row["priority"], None) for row in stalled]
    due += [(priority, None) for priority, count in unattended.items() for _ in range(count)]
    wakeups.wake_senders(conn, due, settings.send_batch_size)
    late = recovery_store.match_late_events(conn, window_s=LATE_EVENT_WINDOW_S)
    store.advance_recipient_statuses(conn, recipient_ids=sorted({row["recipient_id"] for row in late}),
                                     job_ids=sorted({row["recipient_job_id"] for row in late}))
    store.suppress_from_events(conn, event_ids=[row["id"] for row in late])
    if stalled or unattended:
        log.warning(
            "recovered %d stalled sends; woke senders for %d unattended jobs", len(stalled), sum(unattended.values())
        )
    return Recovered(stalled=len(stalled), unattended=sum(unattended.values()), late_events=len(late))


@dataclasses.dataclass(frozen=True)
class TakenOver:
    """What one takeover check did: senders retired now (by rule), jobs requeued, spent senders deleted."""

    retired: dict[str, int]
    jobs: int
    deleted: int


def take_over(conn: psycopg.Connection, settings: Settings) -> TakenOver:
    """Retire dead and hung senders and requeue their claims (one query on senders when none is), in a
    transaction bounded in its lock waits, its statements and its pauses (TAKEOVER_*_MS)."""
    senders_store.set_takeover_timeouts(
        conn, lock_ms=TAKEOVER_LOCK_MS, statement_ms=int(settings.db_timeout_s * 1000), idle_ms=TAKEOVER_IDLE_MS
    )
    senders = senders_store.retire_lost_senders(
        conn, grace_s=settings.send_reconnect_grace_s, lease_s=settings.send_lease_s
    )
    if not senders:
        return TakenOver(retired={}, jobs=0, deleted=0)
    retired: dict[str, int] = {}
    for sender in senders:
        if sender["now"]:
            retired[sender["rule"]] = retired.get(sender["rule"], 0) + 1
            log.warning("sender %d retired: %s", sender["id"], sender["rule"],
                        extra={"sender_id": sender["id"], "rule": sender["rule"]})
    taken = moves.again_if_moved(lambda: _take_over_claims(conn))
    for row in taken:
        log.warning("job queued", extra={
            "job_id": str(row["id"]), "app_id": row["app_id"], "request_id": row["request_id"], "status": "queued",
            "reason": f"recovered: sender {row['sender_id']} was taken over ({row['rule']})",
        })
    metrics.claims_taken_over(row["rule"] for row in taken)
    wakeups.wake_senders(conn, [(row["priority"], None) for row in taken], settings.send_batch_size)
    deleted = senders_store.delete_spent_senders(conn)
    conn.commit()  # the requeue is visible before any backend is terminated (which may fail)
    for sender in senders:
        if sender["now"] and sender["rule"] == "hung":
            _terminate(conn, sender["id"], sender["backend_pid"])
    if taken:
        log.warning("took over %d sending jobs of %d lost senders", len(taken), len({r["sender_id"] for r in taken}))
    return TakenOver(retired=retired, jobs=len(taken), deleted=len(deleted))


def _take_over_claims(conn: psycopg.Connection) -> list[dict]:
    # In a savepoint: a job whose lock the takeover waited for may have been recorded by its sender's fence
    # meanwhile, and so moved to jobs_done (0028), which fails the statement (moves.py); the retirements stay.
    with conn.transaction():
        return senders_store.take_over_lost_claims(conn)


def _terminate(conn: psycopg.Connection, sender_id: int, pid: int) -> None:
    """End a hung sender's liveness backend, so that its lock goes (best effort: it is retired already)."""
    try:
        with conn.transaction():
            senders_store.terminate_sender_backend(conn, sender_id=sender_id, pid=pid)
    except psycopg.Error as exc:
        log.warning("could not terminate the liveness backend of hung sender %d (%s); it stays retired",
                    sender_id, exc)
