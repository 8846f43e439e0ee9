"""Send due email: claim a batch, one Mailjet call for up to 50 messages, record each result."""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence

import psycopg
import psycopg_pool

from mailer import db, memory, metrics, store
from mailer.config import Settings
from mailer.domain import backoff, errors
from mailer.mailjet import send as mailjet
from mailer.mailjet import simulation
from mailer.services import liveness, lookups, rate_limits, suppressions, test_mode, unsubscribe, wakeups
from mailer.store import senders as senders_store
from mailer.store.jobs import ClaimedJob, ClaimFloors

log = logging.getLogger(__name__)
# Recording a claim's results again after the database failed it: first pause, longest pause (_record_retrying).
RECORD_RETRY_FIRST_S = 0.5
RECORD_RETRY_MAX_S = 2.0


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
class _Results:
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


# Each pool's (a process's, for one database) claim floors: where its next claim starts reading the queue.
_FLOORS: weakref.WeakKeyDictionary[psycopg_pool.ConnectionPool, ClaimFloors] = weakref.WeakKeyDictionary()
_FLOORS_LOCK = threading.Lock()


def claim_floors(pool: psycopg_pool.ConnectionPool, settings: Settings) -> ClaimFloors:
    """The claim floors of the claims made through `pool` (made at its first claim)."""
    with _FLOORS_LOCK:
        floors = _FLOORS.get(pool)
        if floors is None:
            floors = _FLOORS[pool] = ClaimFloors(
                margin_s=settings.send_claim_floor_margin_s, full_scan_s=settings.send_claim_full_scan_s
            )
        return floors


def send_due_batch(
    pool: psycopg_pool.ConnectionPool,
    client: mailjet.MailjetClient,
    settings: Settings,
    rng: random.Random | None = None,
    sender: liveness.Liveness | None = None,
    on_claimed: Callable[[bool], None] | None = None,
) -> BatchOutcome:
    """Claim up to one batch of due jobs (MAILER_SEND_BATCH_SIZE jobs, MAILER_SEND_MAX_CALL_BYTES of message)
    as this process's sender, send it, record the outcome; what happened. `on_claimed(more)` is told as soon
    as the claim committed, before Mailjet is called."""
    sender = sender or liveness.current()
    sender_id = sender.wait_healthy(settings.send_reconnect_grace_s)
    with sender.in_flight(sender_id):
        return _send_as(pool, client, settings, rng, sender, sender_id, on_claimed)


class _ClaimRaced(Exception):
    """The claim statement met a serialization failure: rolled back, nothing claimed."""


def _send_as(
    pool: psycopg_pool.ConnectionPool,
    client: mailjet.MailjetClient,
    settings: Settings,
    rng: random.Random | None,
    sender: liveness.Liveness,
    sender_id: int,
    on_claimed: Callable[[bool], None] | None = None,
) -> BatchOutcome:
    started = time.monotonic()  # no later than the claim's claimed_at
    claim_sent = False
    try:
        with db.connection(pool) as conn:
            if not senders_store.hold_sender(conn, sender_id=sender_id):
                raise liveness.SenderUnavailable(f"sender {sender_id} was taken over; it registers anew")
            claim_sent = True
            claim_started = time.monotonic()
            try:
                claim = store.claim_due_jobs(
                    conn, limit=settings.send_batch_size, max_bytes=settings.send_max_call_bytes,
                    sender_id=sender_id, floors=claim_floors(pool, settings),
                )
            except psycopg.errors.SerializationFailure as exc:
                raise _ClaimRaced from exc
            metrics.claim_took(time.monotonic() - claim_started)
            screenings = suppressions.screen(conn, claim.jobs) if claim.jobs else {}
            unsub_box = (
                unsubscribe.fernet(conn)
                if settings.public_url and any(job.priority == "bulk" for job in claim.jobs) else None
            )
            if memory.big_claim(sum(job.message_bytes for job in claim.jobs)):
                db.retire(pool)
        claim.commit_floors()
    except _ClaimRaced as raced:
        # The claim statement itself failed (a job it was about to lock was moved to jobs_done by a cancel that
        # committed meanwhile: 40001), so its transaction was rolled back and nothing of it committed: the sender
        # keeps its identity, and the caller claims again as after a full batch.
        log.info("send: claim raced with a job that changed meanwhile; claiming again (%s)", raced.__cause__)
        return BatchOutcome(more=True)
    except BaseException:
        # Once sent, the claim may have committed though this end never heard (the connection lost at COMMIT):
        # jobs `sending` in the name of a live sender, which is never taken over. Give the sender up.
        if claim_sent:
            sender.abandon(sender_id)
        raise
    if on_claimed is not None:
        on_claimed(claim.more)
    for job in claim.cancelled:
        _log_transition(logging.INFO, job, "cancelled", {"reason": "app_revoked"})
    claimed = claim.jobs
    if not claimed:
        return BatchOutcome(more=claim.more)
    for job in claimed:
        _log_transition(logging.INFO, job, "sending", {})
    results = _Results(claimed_at=started, sender_id=sender_id)
    # Every Mailjet call first waits for the cap all workers share (MAILER_MAILJET_MAX_CALLS_PER_S), not past
    # the claim's deadline, and starts only while the database sees the claim's sender alive (before and after
    # the wait), so that no takeover can have begun: False, and the call does not start.
    wait = functools.partial(rate_limits.wait_for_mailjet, pool, settings, deadline=started + call_window_s(settings))

    def throttle() -> bool:
        return sender.healthy(sender_id) and wait() and sender.healthy(sender_id)

    def alive() -> bool:  # test mode calls no Mailjet: only the sender's liveness matters
        return sender.healthy(sender_id)

    try:
        checked = lookups.look_up(
            client, [job for job in claimed if job.verify_before_send and not job.test], throttle,
            settings.mailjet_lookup_concurrency,
        )
        settled = _settle_lookups(checked, screenings, results, settings.send_listing_delay_s)
        # A test job's earlier attempt that ended unknown recorded nothing (its answer and events commit together):
        # answered again, unless its app is revoked since (cancelled, as a job Mailjet lacks would be).
        results.cancelled.extend(job for job in claimed if job.test and job.revoked)
        settled.update(job.id for job in claimed if job.test and job.revoked)
        to_send = [job for job in claimed if job.id not in settled]
        screened = suppressions.split(to_send, screenings)
        results.suppressed, results.screenings = screened.suppressed, screened.screenings
        results.rejected.extend(screened.unsendable)
        if unsub_box is not None and settings.public_url:  # the token names the message's first To as sent
            screened.to_send = [
                unsubscribe.with_headers(job, unsub_box, settings.public_url) if job.priority == "bulk" else job
                for job in screened.to_send
            ]
        live = [job for job in screened.to_send if not job.test]
        if live:
            _send(client, live, results, throttle)
        tests = [job for job in screened.to_send if job.test]
        if tests:
            _send(test_mode.CLIENT, tests, results, alive, simulated=True)
        outcome = _record_retrying(pool, settings, results, rng, claim.more)
    except BaseException:
        # The jobs stay `sending` in this sender's name, and a live sender is never taken over: give it up, so
        # that the takeover requeues them (to be checked with Mailjet first).
        sender.abandon(sender_id)
        raise
    for level, job, status, extra in results.transitions:
        _log_transition(level, job, status, extra)
    _count_committed(results)
    return outcome


def _count_committed(results: _Results) -> None:
    """Count what the committed transaction recorded: test jobs apart from live ones (mailer_jobs_total is live
    mail only, what an operator alerts on), and test mode's answers only for the jobs it recorded."""
    metrics.jobs_reached((status, job.priority) for _, job, status, _ in results.transitions if not job.test)
    metrics.test_mode_jobs_reached(status for _, job, status, _ in results.transitions if job.test)
    recorded = {job.id for _, job, _, _ in results.transitions}
    answers = [accepted for job_id, accepted in results.test_answers.items() if job_id in recorded]
    metrics.test_mode_answered(sum(answers), len(answers) - sum(answers))
    metrics.test_mode_events(results.test_events)
    metrics.test_mode_events_lost(results.test_events_lost)


def _log_transition(level: int, job: ClaimedJob, status: str, extra: dict[str, object]) -> None:
    """One JSON log line per job transition, with the request id of the API call that queued the job."""
    log.log(level, "job %s", status, extra={
        "job_id": str(job.id), "app_id": job.app_id, "request_id": job.request_id, "status": status,
        "attempt": job.attempts, **({"test": True} if job.test else {}), **extra,
    })


def call_window_s(settings: Settings) -> float:
    """How long after its claim a sender may still start a Mailjet call for it (MAILER_SEND_CALL_WINDOW_S): a live
    claim is never taken over, but it should not hold its jobs for an unbounded time either."""
    return settings.send_call_window_s


def _settle_lookups(
    checked: Sequence[lookups.Lookup], screenings: dict[uuid.UUID, suppressions.Screening], results: _Results,
    listing_delay_s: float,
) -> set[uuid.UUID]:
    """The jobs an earlier attempt whose outcome is unknown settles: accepted by Mailjet (never resend; recorded
    like a send's result, with the MessageIDs Mailjet lists), not listed yet but younger than Mailjet's listing
    delay (looked up again later), not asked in time (released), a revoked app's job Mailjet lacks (cancelled),
    a lookup that failed (retried)."""
    settled = set()
    for lookup in checked:
        job = lookup.job
        settled.add(job.id)
        if not lookup.asked:
            results.unsent.append(job)
        elif lookup.error is not None:
            exc = lookup.error
            metrics.mailjet_answered("lookup", exc.status_code)
            error = f"could not check an earlier attempt with Mailjet: {exc}"
            # Not ambiguous: nothing was sent, the job stays marked, and its lost attempt keeps its time.
            results.retry.append((job, error, False, exc.retry_after))
        elif lookup.found:
            metrics.mailjet_answered("lookup", 200)
            _accept_found(job, lookup.found, screenings.get(job.id), results)
        else:
            metrics.mailjet_answered("lookup", 200)
            age = job.lost_attempt_age_s
            if age is not None and age < listing_delay_s:
                # Mailjet lists an accepted message only some time later: not found may just mean not yet.
                results.recheck.append(job)
            elif job.revoked:  # never sent before, and its app may send no more
                results.cancelled.append(job)
            else:
                settled.discard(job.id)
    return settled


def _accept_found(
    job: ClaimedJob, found: Sequence[mailjet.FoundRecipient], screening: suppressions.Screening | None,
    results: _Results,
) -> None:
    """Record a job Mailjet has as sent with the MessageIDs it lists, matched by address. A recipient without a
    row stays as it is (Mailjet lists messages with some delay: its events still match it by CustomID and
    address), unless it is suppressed now: then it was most likely left out, and is marked so."""
    suppressed = screening.skipped if screening is not None else ()
    # Positions as stored: results.screenings, which _message_row maps positions through, holds no found job.
    matched = lookups.match(job.message, found, suppressed)
    results.accepted.append((job, mailjet.MessageResult(True, matched.recipients, None, None)))
    results.left_out.extend(
        {"job_id": job.id, "kind": kind, "position": position}
        for kind, position in matched.unmatched if (kind, position) in suppressed
    )


def _send(
    client: mailjet.MailjetClient | simulation.TestModeClient, jobs: Sequence[ClaimedJob], results: _Results,
    throttle: Callable[[], bool], simulated: bool = False,
) -> None:
    """One send call's results into `results`; `simulated`: test jobs, answered by test mode, not Mailjet (and
    counted apart from Mailjet's calls)."""
    outgoing = [mailjet.OutgoingMessage(custom_id=str(job.id), message=job.message) for job in jobs]
    if not throttle():
        # Too late to start a call that is sure to end before the claim looks stalled: another worker would
        # take these over while this one still sends them. Nothing was sent: back to the queue as never tried.
        results.unsent.extend(jobs)
        return
    if not simulated:
        metrics.send_call_messages(len(outgoing))
    try:
        response = client.send(outgoing)
    except mailjet.SendError as exc:
        if not simulated:
            metrics.mailjet_answered("send", exc.status_code, results.claimed_at)
        # 401/403 are our credentials, not the messages: retry so fixing the key recovers them.
        if exc.transient or exc.status_code in (401, 403):
            results.retry.extend((job, str(exc), exc.ambiguous, exc.retry_after) for job in jobs)
        elif len(jobs) > 1:
            # A 4xx without a Messages array refuses the whole call, whoever's message caused it, and means
            # Mailjet accepted none of them (a partial failure comes with Messages): send each alone, so a bad
            # message fails only its own job and the others go out once.
            log.warning("Mailjet refused a call of %d messages as a whole (%s); sending them one by one",
                        len(jobs), exc)
            for job in jobs:
                _send(client, [job], results, throttle, simulated)
        else:
            results.rejected.extend((job, str(exc)) for job in jobs)
        return
    if simulated:
        answers = zip(jobs, response.results, strict=True)
        results.test_answers.update((job.id, result.accepted) for job, result in answers)
    else:
        metrics.mailjet_answered("send", response.status_code, results.claimed_at)
    for job, result in zip(jobs, response.results, strict=True):
        if result.accepted:
            results.accepted.append((job, result))
        else:
            results.rejected.append((job, f"{result.error_code}: {result.error_message}"))


def _record_retrying(
    pool: psycopg_pool.ConnectionPool, settings: Settings, results: _Results, rng: random.Random | None, more: bool
) -> BatchOutcome:
    """Record the results, again on a fresh connection while the database fails it, up to MAILER_DB_TIMEOUT_S."""
    # They may hold Mailjet's MessageIDs: given up, the jobs would be taken over and looked up again. Retrying is
    # safe: the fence drops the results of the jobs taken over meanwhile.
    deadline = time.monotonic() + settings.db_timeout_s
    pause = RECORD_RETRY_FIRST_S
    while True:
        results.transitions.clear()  # a failed attempt's, rolled back
        results.test_events.clear()
        results.test_events_lost = 0
        try:
            with db.connection(pool) as conn:
                return _record(conn, settings, results, rng, more)
        except errors.DatabaseUnavailable as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("recording a claim's results failed (%s); trying again in %.1f s", exc.__cause__ or exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, RECORD_RETRY_MAX_S)


def _record(
    conn: psycopg.Connection, settings: Settings, results: _Results, rng: random.Random | None, more: bool
) -> BatchOutcome:
    # The fence: only the jobs this claim still holds (locked until commit) get its results.
    _drop_late(results, senders_store.hold_claimed_jobs(
        conn, sender_id=results.sender_id, jobs=[(job.id, job.attempts) for job in _claimed(results)]
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
    priorities = {job.id: job.priority for job in _claimed(results)}
    wakeups.wake_senders(
        conn, ((priorities[job_id], run_at) for job_id, run_at in (requeued | released | rechecked).items()),
        settings.send_batch_size,
    )
    claimed_jobs = {job.id: job for job in _claimed(results)}
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
    return BatchOutcome(
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


def _claimed(results: _Results) -> list[ClaimedJob]:
    return (
        [job for job, _ in results.accepted] + [job for job, _ in results.rejected]
        + [job for job, *_ in results.retry] + results.suppressed + results.unsent + results.cancelled
        + results.recheck
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


def _drop_late(results: _Results, held: set[uuid.UUID]) -> None:
    """Forget the results of jobs the claim no longer holds: taken over (and maybe claimed again) meanwhile."""
    late = [job for job in _claimed(results) if job.id not in held]
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
