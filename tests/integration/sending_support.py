"""Driving the sender and the simulator from integration tests."""

from __future__ import annotations

import psycopg
import requests

from mailer import db
from mailer.config import Settings
from mailer.mailjet import send as mailjet
from mailer.services import send_results, sending


def message(to: str) -> dict:
    """A minimal valid message to one recipient."""
    return {"from": {"email": "billing@example.com"}, "to": [{"email": to}], "subject": "Invoice", "text": "hi"}


def run_sender(settings: Settings) -> send_results.BatchOutcome:
    """One pass of the sender, as a worker's send task makes it."""
    pool = db.create_pool(settings, name="test-sender")
    client = mailjet.MailjetClient(settings.mailjet_api_url, "key", "secret", timeout=settings.mailjet_timeout_s)
    try:
        return sending.send_due_batch(pool, client, settings)
    finally:
        pool.close()


def make_due(conn: psycopg.Connection) -> None:
    """Skip the backoff wait of requeued jobs, and Mailjet's listing delay after a lost attempt."""
    conn.execute(
        "UPDATE jobs SET run_at = now(), lost_attempt_at = lost_attempt_at - interval '1 hour' WHERE status = 'queued'"
    )


def script(simulator: str, *responses: str) -> None:
    """Queue the simulator's answers to the next send calls."""
    requests.post(f"{simulator}/_sim/script", json={"responses": list(responses)}, timeout=5).raise_for_status()


def sends(simulator: str) -> dict:
    """What the simulator accepted so far."""
    return requests.get(f"{simulator}/_sim/sends", timeout=5).json()
