"""Send due email: claim a batch, one Mailjet call for up to 50 messages, record each result."""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable

import psycopg
import psycopg_pool

from mailer import db, memory, metrics, store
from mailer.config import Settings
from mailer.mailjet import send as mailjet
from mailer.services import (
    liveness,
    lookups,
    rate_limits,
    send_calls,
    send_recording,
    send_results,
    suppressions,
    test_mode,
    unsubscribe,
)
from mailer.store import senders as senders_store
from mailer.store.jobs import ClaimFloors

log = logging.getLogger(__name__)

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
) -> send_results.BatchOutcome:
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
) -> send_results.BatchOutcome:
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
        return send_results.BatchOutcome(more=True)
    except BaseException:
        # Once sent, the claim may have committed though this end never heard (the connection lost at COMMIT):
        # jobs `sending` in the name of a live sender, which is never taken over. Give the sender up.
        if claim_sent:
            sender.abandon(sender_id)
        raise
    if on_claimed is not None:
        on_claimed(claim.more)
    for job in claim.cancelled:
        send_results.log_transition(logging.INFO, job, "cancelled", {"reason": "app_revoked"})
    claimed = claim.jobs
    if not claimed:
        return send_results.BatchOutcome(more=claim.more)
    for job in claimed:
        send_results.log_transition(logging.INFO, job, "sending", {})
    results = send_results.Results(claimed_at=started, sender_id=sender_id)
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
        settled = send_calls.settle_lookups(checked, screenings, results, settings.send_listing_delay_s)
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
            send_calls.send(client, live, results, throttle)
        tests = [job for job in screened.to_send if job.test]
        if tests:
            send_calls.send(test_mode.CLIENT, tests, results, alive, simulated=True)
        outcome = send_recording.record_retrying(pool, settings, results, rng, claim.more)
    except BaseException:
        # The jobs stay `sending` in this sender's name, and a live sender is never taken over: give it up, so
        # that the takeover requeues them (to be checked with Mailjet first).
        sender.abandon(sender_id)
        raise
    for level, job, status, extra in results.transitions:
        send_results.log_transition(level, job, status, extra)
    send_results.count_committed(results)
    return outcome


def call_window_s(settings: Settings) -> float:
    """How long after its claim a sender may still start a Mailjet call for it (MAILER_SEND_CALL_WINDOW_S): a live
    claim is never taken over, but it should not hold its jobs for an unbounded time either."""
    return settings.send_call_window_s
