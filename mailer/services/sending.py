"""Send due email: claim a batch, one Mailjet call for up to 50 messages, record each result."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence

import psycopg
import psycopg_pool

from mailer import db, store
from mailer.config import Settings
from mailer.domain import backoff
from mailer.mailjet import send as mailjet
from mailer.services import wakeups
from mailer.store.jobs import ClaimedJob

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchOutcome:
    """How many claimed jobs ended sent, failed, or back in the queue."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0


@dataclasses.dataclass
class _Results:
    accepted: list[tuple[ClaimedJob, mailjet.MessageResult | None]] = dataclasses.field(default_factory=list)
    rejected: list[tuple[ClaimedJob, str]] = dataclasses.field(default_factory=list)
    retry: list[tuple[ClaimedJob, str, bool, float | None]] = dataclasses.field(default_factory=list)


def send_due_batch(
    pool: psycopg_pool.ConnectionPool,
    client: mailjet.MailjetClient,
    settings: Settings,
    rng: random.Random | None = None,
) -> BatchOutcome:
    """Claim up to one batch of due jobs, send it, record the outcome; what happened."""
    with db.connection(pool) as conn:
        claimed = store.claim_due_jobs(conn, limit=settings.send_batch_size)
    if not claimed:
        return BatchOutcome()
    results = _Results()
    to_send = [job for job in claimed if not _already_accepted(client, job, results)]
    if to_send:
        _send(client, to_send, results)
    with db.connection(pool) as conn:
        return _record(conn, settings, results, rng)


def _already_accepted(client: mailjet.MailjetClient, job: ClaimedJob, results: _Results) -> bool:
    """Whether an earlier attempt whose outcome is unknown did reach Mailjet (then never resend)."""
    if not job.verify_before_send:
        return False
    try:
        found = client.find_by_custom_id(str(job.id))
    except mailjet.SendError as exc:
        results.retry.append((job, f"could not check an earlier attempt with Mailjet: {exc}", True, exc.retry_after))
        return True
    if found:
        results.accepted.append((job, None))
        return True
    return False


def _send(client: mailjet.MailjetClient, jobs: Sequence[ClaimedJob], results: _Results) -> None:
    outgoing = [mailjet.OutgoingMessage(custom_id=str(job.id), message=job.message) for job in jobs]
    try:
        response = client.send(outgoing)
    except mailjet.SendError as exc:
        # 401/403 are our credentials, not the messages: retry so fixing the key recovers them.
        if exc.transient or exc.status_code in (401, 403):
            results.retry.extend((job, str(exc), exc.ambiguous, exc.retry_after) for job in jobs)
        else:
            results.rejected.extend((job, str(exc)) for job in jobs)
        return
    for job, result in zip(jobs, response.results, strict=True):
        if result.accepted:
            results.accepted.append((job, result))
        else:
            results.rejected.append((job, f"{result.error_code}: {result.error_message}"))


def _record(conn: psycopg.Connection, settings: Settings, results: _Results, rng: random.Random | None) -> BatchOutcome:
    sent = store.mark_jobs_sent(conn, ids=[job.id for job, _ in results.accepted])
    message_rows = [
        {"job_id": job.id, "kind": recipient.kind, "position": recipient.position,
         "message_id": recipient.message_id, "message_uuid": recipient.message_uuid}
        for job, result in results.accepted if result is not None
        for recipient in result.recipients
    ]
    store.set_recipient_message_ids(conn, recipients=message_rows)
    matched = store.apply_pending_events(conn, message_ids=[row["message_id"] for row in message_rows])
    store.advance_recipient_statuses(conn, recipient_ids=matched)

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
    priorities = {job.id: job.priority for job, *_ in results.retry}
    wakeups.wake_senders(
        conn, ((priorities[job_id], run_at) for job_id, run_at in requeued.items()), settings.send_batch_size
    )
    for job, error, *_ in results.retry:
        log.warning("send attempt %s of job %s failed: %s", job.attempts, job.id, error)
    return BatchOutcome(
        claimed=len(results.accepted) + len(results.rejected) + len(results.retry),
        sent=len(sent),
        failed=len(failed),
        retried=len(requeued),
    )
