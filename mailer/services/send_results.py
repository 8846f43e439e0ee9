"""A claimed batch's results as the sender gathers them, and what it reports: the outcome, log lines, metrics."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid

from mailer import metrics
from mailer.mailjet import send as mailjet
from mailer.services import suppressions
from mailer.store.jobs import ClaimedJob

log = logging.getLogger("mailer.services.sending")  # the sender's lines keep one logger name


@dataclasses.dataclass(frozen=True)
class BatchOutcome:
    """How many claimed jobs ended sent, failed, suppressed, back in the queue (retried after an error, or
    released untried when the claim's time ran out), cancelled (a revoked app's job that Mailjet did not have),
    rechecked (a lost attempt Mailjet did not list yet: looked up again after its listing delay);
    whether the claim stopped at a limit (jobs or bytes), so that more may be due."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    suppressed: int = 0
    released: int = 0
    cancelled: int = 0
    rechecked: int = 0
    more: bool = False


@dataclasses.dataclass
class Results:
    """What became of each job of one claim, gathered as the sender goes and recorded in one transaction."""

    accepted: list[tuple[ClaimedJob, mailjet.MessageResult | None]] = dataclasses.field(default_factory=list)
    rejected: list[tuple[ClaimedJob, str]] = dataclasses.field(default_factory=list)
    retry: list[tuple[ClaimedJob, str, bool, float | None]] = dataclasses.field(default_factory=list)
    suppressed: list[ClaimedJob] = dataclasses.field(default_factory=list)  # every recipient suppressed
    unsent: list[ClaimedJob] = dataclasses.field(default_factory=list)  # never tried: the deadline came first
    cancelled: list[ClaimedJob] = dataclasses.field(default_factory=list)  # revoked app, unknown to Mailjet
    # Lost attempt not listed by Mailjet yet, and younger than its listing delay: looked up again later
    recheck: list[ClaimedJob] = dataclasses.field(default_factory=list)
    # Recipients of jobs the lookup confirmed that Mailjet lists no row for and that are suppressed now
    left_out: list[dict[str, object]] = dataclasses.field(default_factory=list)
    screenings: dict[uuid.UUID, suppressions.Screening] = dataclasses.field(default_factory=dict)
    claimed_at: float = dataclasses.field(default_factory=time.monotonic)  # for the send latency metric
    sender_id: int = 0  # the sender the claim was made by (services/liveness.py)
    # (log level, job, new status, extra fields): logged once the transaction recording them commits
    transitions: list[tuple[int, ClaimedJob, str, dict[str, object]]] = dataclasses.field(default_factory=list)
    # Test mode's answers (accepted or not) by job, and, once recorded, its events' names and the test jobs left
    # without events: counted once the transaction recording them commits, as transitions are
    test_answers: dict[uuid.UUID, bool] = dataclasses.field(default_factory=dict)
    test_events: list[str] = dataclasses.field(default_factory=list)
    test_events_lost: int = 0


def claimed_jobs(results: Results) -> list[ClaimedJob]:
    """Every job the results hold, whatever became of it."""
    return (
        [job for job, _ in results.accepted] + [job for job, _ in results.rejected]
        + [job for job, *_ in results.retry] + results.suppressed + results.unsent + results.cancelled
        + results.recheck
    )


def drop_late(results: Results, held: set[uuid.UUID]) -> None:
    """Forget the results of jobs the claim no longer holds: taken over (and maybe claimed again) meanwhile."""
    late = [job for job in claimed_jobs(results) if job.id not in held]
    if not late:
        return
    results.accepted = [(job, result) for job, result in results.accepted if job.id in held]
    results.rejected = [(job, error) for job, error in results.rejected if job.id in held]
    results.retry = [retry for retry in results.retry if retry[0].id in held]
    results.suppressed = [job for job in results.suppressed if job.id in held]
    results.unsent = [job for job in results.unsent if job.id in held]
    results.cancelled = [job for job in results.cancelled if job.id in held]
    results.recheck = [job for job in results.recheck if job.id in held]
    results.left_out = [row for row in results.left_out if row["job_id"] in held]
    results.screenings = {job_id: s for job_id, s in results.screenings.items() if job_id in held}
    metrics.send_late_results(len(late))
    for job in late:
        log.warning("late result ignored: the job was taken over", extra={
            "job_id": str(job.id), "app_id": job.app_id, "request_id": job.request_id, "attempt": job.attempts,
            "sender_id": results.sender_id,
        })


def count_committed(results: Results) -> None:
    """Count what the committed transaction recorded: test jobs apart from live ones (mailer_jobs_total is live
    mail only, what an operator alerts on), and test mode's answers only for the jobs it recorded."""
    metrics.jobs_reached((status, job.priority) for _, job, status, _ in results.transitions if not job.test)
    metrics.test_mode_jobs_reached(status for _, job, status, _ in results.transitions if job.test)
    recorded = {job.id for _, job, _, _ in results.transitions}
    answers = [accepted for job_id, accepted in results.test_answers.items() if job_id in recorded]
    metrics.test_mode_answered(sum(answers), len(answers) - sum(answers))
    metrics.test_mode_events(results.test_events)
    metrics.test_mode_events_lost(results.test_events_lost)


def log_transition(level: int, job: ClaimedJob, status: str, extra: dict[str, object]) -> None:
    """One JSON log line per job transition, with the request id of the API call that queued the job."""
    log.log(level, "job %s", status, extra={
        "job_id": str(job.id), "app_id": job.app_id, "request_id": job.request_id, "status": status,
        "attempt": job.attempts, **({"test": True} if job.test else {}), **extra,
    })
