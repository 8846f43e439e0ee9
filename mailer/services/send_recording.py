"""Record a claimed batch's results in one transaction, fenced to the jobs the claim still holds."""

from __future__ import annotations

import logging
import random
import time

import psycopg
import psycopg_pool

from mailer import db, metrics, store
from mailer.config import Settings
from mailer.domain import backoff, errors
from mailer.mailjet import send as mailjet
from mailer.services import send_results, suppressions, test_mode, wakeups
from mailer.store import senders as senders_store
from mailer.store.jobs import ClaimedJob

log = logging.getLogger("mailer.services.sending")  # the sender's lines keep one logger name
# Recording a claim's results again after the database failed it: first pause, longest pause (record_retrying).
RECORD_RETRY_FIRST_S = 0.5
RECORD_RETRY_MAX_S = 2.0


def record_retrying(
    pool: psycopg_pool.ConnectionPool, settings: Settings, results: send_results.Results, rng: random.Random | None,
    more: bool,
) -> send_results.BatchOutcome:
    """Record the results, again on a fresh connection while the database fails it, up to MAILER_DB_TIMEOUT_S."""
    # They may hold Mailjet's MessageIDs: given up, the jobs would be taken over and looked up again. Retrying is
    # safe: the fence drops the results of the jobs taken over meanwhile. A deadlock is retried too (psycopg's
    # DeadlockDetected is an OperationalError, so db.connection makes it DatabaseUnavailable): two records whose
    # backends share a job_counts shard can bump two counter rows in opposite orders across their statements
    # (migration 0046).
    deadline = time.monotonic() + settings.db_timeout_s
    pause = RECORD_RETRY_FIRST_S
    while True:
        results.transitions.clear()  # a failed attempt's, rolled back
        results.test_events.clear()
        results.test_events_lost = 0
        try:
            with db.connection(pool) as conn:
                return record(conn, settings, results, rng, more)
        except errors.DatabaseUnavailable as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("recording a claim's results failed (%s); trying again in %.1f s", exc.__cause__ or exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, RECORD_RETRY_MAX_S)


def record(
    conn: psycopg.Connection, settings: Settings, results: send_results.Results, rng: random.Random | None, more: bool
) -> send_results.BatchOutcome:
    """Record the results in the caller's transaction: the fence first, then what became of each job."""
    # The fence: only the jobs this claim still holds (locked until commit) get its results.
    send_results.drop_late(results, senders_store.hold_claimed_jobs(
        conn, sender_id=results.sender_id, jobs=[(job.id, job.attempts) for job in send_results.claimed_jobs(results)]
    ))
    # Suppressed recipients first, while their jobs are still `sending`. A job going back to the
    # queue is screened again at its next attempt, so its recipients stay as they are.
    requeue = {job.id for job, *_ in results.retry if job.attempts < settings.send_max_attempts}
    suppressed = store.mark_jobs_suppressed(conn, ids=[job.id for job in results.suppressed])
    store.suppress_recipients(conn, recipients=[
        {"job_id": job_id, "kind": kind, "position": position}
        for job_id, screening in results.screenings.items() if job_id not in requeue and not screening.nothing_left
        for kind, position in screening.skipped
    ] + results.left_out)
    sent = store.mark_jobs_sent(conn, ids=[job.id for job, _ in results.accepted])
    message_rows = [
        _message_row(job, recipient, results.screenings.get(job.id))
        for job, result in results.accepted if result is not None
        for recipient in result.recipients
    ]
    store.set_recipient_message_ids(conn, recipients=message_rows)
    matched = store.apply_pending_events(conn, message_ids=[row["message_id"] for row in message_rows],
                                         job_ids=sorted({row["job_id"] for row in message_rows}))
    store.advance_recipient_statuses(conn, recipient_ids=matched.recipient_ids, job_ids=matched.job_ids)
    store.suppress_from_events(conn, event_ids=matched.event_ids)
    marked_sent = set(sent)
    tests_sent = [
        (job, result) for job, result in results.accepted if job.test and job.id in marked_sent and result is not None
    ]
    if tests_sent:
        names = test_mode.record_events_apart(conn, tests_sent)
        if names is None:  # the test jobs stay sent, without events; the rest of the claim is recorded
            results.test_events_lost = len(tests_sent)
        else:
            results.test_events.extend(names)

    failures = [{"id": job.id, "error": error} for job, error in results.rejected]
    retries = []
    for job, error, ambiguous, retry_after in results.retry:
        if job.attempts >= settings.send_max_attempts:
            failures.append({"id": job.id, "error": f"{error} (gave up after {job.attempts} attempts)"})
            continue
        delay = backoff.retry_delay(
            job.attempts, settings.send_backoff_base_s, settings.send_backoff_cap_s, retry_after, rng
        )
        retries.append({"id": job.id, "error": error, "delay_s": delay, "ambiguous": ambiguous})
    failed = store.mark_jobs_failed(conn, failures=failures)
    requeued = store.requeue_jobs(conn, retries=retries)
    released = store.release_jobs(conn, ids=[job.id for job in results.unsent])
    cancelled = store.cancel_revoked_jobs(conn, ids=[job.id for job in results.cancelled])
    rechecked = store.recheck_jobs(
        conn, ids=[job.id for job in results.recheck], delay_s=settings.send_listing_delay_s
    )
    priorities = {job.id: job.priority for job in send_results.claimed_jobs(results)}
    wakeups.wake_senders(
        conn, ((priorities[job_id], run_at) for job_id, run_at in (requeued | released | rechecked).items()),
        settings.send_batch_size,
    )
    claimed_jobs = {job.id: job for job in send_results.claimed_jobs(results)}
    results.transitions.extend((logging.INFO, claimed_jobs[job_id], "suppressed", {}) for job_id in suppressed)
    results.transitions.extend((logging.INFO, claimed_jobs[job_id], "sent", {}) for job_id in sent)
    errors_by_id = {failure["id"]: failure["error"] for failure in failures}
    results.transitions.extend(
        (logging.WARNING, claimed_jobs[job_id], "failed", {"error": errors_by_id[job_id]}) for job_id in failed
    )
    retried = {retry["id"]: retry for retry in retries}
    results.transitions.extend(
        (logging.WARNING, claimed_jobs[job_id], "retry_scheduled",
         {"error": retried[job_id]["error"], "retry_in_s": retried[job_id]["delay_s"], "run_at": run_at})
        for job_id, run_at in requeued.items()
    )
    results.transitions.extend(
        (logging.INFO, claimed_jobs[job_id], "released", {"reason": "not tried before the claim's deadline"})
        for job_id in released
    )
    results.transitions.extend(
        (logging.INFO, claimed_jobs[job_id], "cancelled", {"reason": "app_revoked"}) for job_id in cancelled
    )
    results.transitions.extend(
        (logging.INFO, claimed_jobs[job_id], "recheck",
         {"reason": "earlier attempt not listed by Mailjet yet", "run_at": run_at})
        for job_id, run_at in rechecked.items()
    )
    if rechecked:
        metrics.send_rechecks(len(rechecked))
    if released:
        metrics.send_released(len(released))
        log.warning("%d claimed jobs not tried before the claim's deadline went back to the queue", len(released))
    return send_results.BatchOutcome(
        claimed=len(claimed_jobs),
        sent=len(sent),
        failed=len(failed),
        retried=len(requeued),
        suppressed=len(suppressed),
        released=len(released),
        cancelled=len(cancelled),
        rechecked=len(rechecked),
        more=more,
    )


def _message_row(
    job: ClaimedJob, recipient: mailjet.AcceptedRecipient, screening: suppressions.Screening | None
) -> dict:
    """The stored recipient a MessageID belongs to: Mailjet counts positions in the message as sent,
    which lacks the suppressed recipients (and may have moved Cc up to To)."""
    kind, position = (recipient.kind, recipient.position)
    if screening is not None:
        kind, position = screening.original(kind, position)
    return {"job_id": job.id, "kind": kind, "position": position,
            "message_id": recipient.message_id, "message_uuid": recipient.message_uuid}
