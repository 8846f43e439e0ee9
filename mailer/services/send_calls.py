"""Mailjet's part of a claimed batch: earlier attempts settled by their lookups, then the send calls."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence

from mailer import metrics
from mailer.mailjet import send as mailjet
from mailer.mailjet import simulation
from mailer.services import lookups, send_results, suppressions
from mailer.store.jobs import ClaimedJob

log = logging.getLogger("mailer.services.sending")  # the sender's lines keep one logger name


def settle_lookups(
    checked: Sequence[lookups.Lookup], screenings: dict[uuid.UUID, suppressions.Screening],
    results: send_results.Results, listing_delay_s: float,
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
    results: send_results.Results,
) -> None:
    """Record a job Mailjet has as sent with the MessageIDs it lists, matched by address. A recipient without a
    row stays as it is (Mailjet lists messages with some delay: its events still match it by CustomID and
    address), unless it is suppressed now: then it was most likely left out, and is marked so."""
    suppressed = screening.skipped if screening is not None else ()
    # Positions as stored: results.screenings, which send_recording maps positions through, holds no found job.
    matched = lookups.match(job.message, found, suppressed)
    results.accepted.append((job, mailjet.MessageResult(True, matched.recipients, None, None)))
    results.left_out.extend(
        {"job_id": job.id, "kind": kind, "position": position}
        for kind, position in matched.unmatched if (kind, position) in suppressed
    )


def send(
    client: mailjet.MailjetClient | simulation.TestModeClient, jobs: Sequence[ClaimedJob],
    results: send_results.Results, throttle: Callable[[], bool], simulated: bool = False,
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
                send(client, [job], results, throttle, simulated)
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
