"""Test mode: a test app's sends are answered by the sender itself, and the events Mailjet would post for them
are applied through the path of POST /events, in the transaction that records the sends."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import psycopg

from mailer import metrics
from mailer.mailjet import events as mailjet_events
from mailer.mailjet import send as mailjet
from mailer.mailjet import simulation
from mailer.services import tracking
from mailer.store.jobs import ClaimedJob

# The one "Mailjet" of test jobs: stateless, no network.
CLIENT = simulation.TestModeClient()


def record_events(conn: psycopg.Connection, sent: Sequence[tuple[ClaimedJob, mailjet.MessageResult]]) -> int:
    """Apply the events Mailjet would post for these test jobs that were just recorded as sent: serialized as
    Mailjet's Event API body, parsed by its parser and recorded by tracking.record_events, one step at a time
    (first events, then opens, then clicks...), so each status change is a change of its own (webhooks
    `email.delivered`, then `email.opened`...). How many events."""
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
    recorded = 0
    for step in steps:
        parsed = mailjet_events.parse_events(json.dumps(step).encode())
        recorded += tracking.record_events(conn, parsed).received
        metrics.test_mode_events(event.name for event in parsed)
    return recorded
