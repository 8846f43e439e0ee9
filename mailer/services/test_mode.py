"""Test mode: a test app's sends are answered by the sender itself, and the events Mailjet would post for them
are applied through the path of POST /events, in the transaction that records the sends."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

import psycopg

from mailer.mailjet import events as mailjet_events
from mailer.mailjet import send as mailjet
from mailer.mailjet import simulation
from mailer.services import tracking
from mailer.store.jobs import ClaimedJob

log = logging.getLogger(__name__)

# The one "Mailjet" of test jobs: stateless, no network.
CLIENT = simulation.TestModeClient()


def record_events(conn: psycopg.Connection, sent: Sequence[tuple[ClaimedJob, mailjet.MessageResult]]) -> list[str]:
    """Apply the events Mailjet would post for these test jobs that were just recorded as sent: serialized as
    Mailjet's Event API body, parsed by its parser and recorded by tracking.record_events, one step at a time
    (step 1 each recipient's first event, step 2 open or spam, step 3 click or unsub), so each status change is a
    change of its own (webhooks `email.delivered`, then `email.opened`...). The recorded events' Mailjet names
    (counted once committed)."""
    # In the transaction that marks the jobs sent: the events can neither precede `sent` nor be lost, which a
    # later task could be (Procrastinate does not run again a task whose worker died), and a duplicate changes
    # nothing (fingerprints).
    at = int(time.time())
    steps: list[list[dict]] = []
    for job, result in sent:
        outgoing = mailjet.OutgoingMessage(custom_id=str(job.id), message=job.message)
        for index, step in enumerate(simulation.test_events(outgoing, result.recipients, at)):
            if index == len(steps):
                steps.append([])
            steps[index].extend(step)
    names: list[str] = []
    for step in steps:
        parsed = mailjet_events.parse_events(json.dumps(step).encode())
        tracking.record_events(conn, parsed)
        names.extend(event.name for event in parsed)
    return names


def record_events_apart(
    conn: psycopg.Connection, sent: Sequence[tuple[ClaimedJob, mailjet.MessageResult]]
) -> list[str] | None:
    """record_events in a savepoint of the transaction recording the sends; None when that failed (logged): the
    test jobs then stay `sent` without events, and the rest of their claim (live jobs' MessageIDs) is recorded."""
    try:
        with conn.transaction():
            return record_events(conn, sent)
    except Exception as exc:
        if conn.broken or conn.closed:
            raise  # the connection itself: the whole record is tried again (services/send_recording.py)
        # The error's class only: its text may quote the messages' data.
        log.error("test mode: recording the events of %d sent test jobs failed (%s); they stay sent without events",
                  len(sent), type(exc).__name__, extra={"job_ids": [str(job.id) for job, _ in sent]})
        return None
