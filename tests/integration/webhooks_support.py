"""Helpers shared by the webhook tests: queue a job, move its recipients, register endpoints."""

from __future__ import annotations

import base64
import json
from typing import Any

import psycopg

from tests.conftest import EVENTS_AUTH

MAILJET = {"Authorization": "Basic " + base64.b64encode(EVENTS_AUTH.encode()).decode()}
BIG_ID = 2**60 + 7  # a Mailjet MessageID: above 2**53


def queue(client, auth, *to: str, metadata: dict | None = None) -> str:  # type: ignore[no-untyped-def]
    """Queue one job to `to` (default one address); its id."""
    body: dict[str, Any] = {"from": {"email": "billing@example.com"},
                            "to": [{"email": address} for address in (to or ("ann@example.org",))],
                            "subject": "Invoice", "text": "hi"}
    if metadata is not None:
        body["metadata"] = metadata
    response = client.post("/queue", json=body, headers=auth)
    assert response.status_code == 202, response.data
    return str(response.json["id"])


def register(client, auth, url: str, events: list[str] | None = None) -> dict:  # type: ignore[no-untyped-def]
    """Register an endpoint; the creation answer (with its secret)."""
    response = client.post("/webhooks", json={"url": url, "events": events or ["*"]}, headers=auth)
    assert response.status_code == 201, response.data
    return dict(response.json)


def mark_sent(conn: psycopg.Connection, job_id: str, first_message_id: int = BIG_ID) -> None:
    """What the sender records when Mailjet accepts a job: each recipient `sent` with a MessageID."""
    conn.execute(
        "UPDATE recipients SET status = 'sent', message_id = %s + position WHERE job_id = %s",
        (first_message_id, job_id),
    )


def set_status(conn: psycopg.Connection, job_id: str, status: str) -> None:
    conn.execute("UPDATE recipients SET status = %s WHERE job_id = %s", (status, job_id))


def post_events(client, events: list[dict]) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/events", data=json.dumps(events), headers=MAILJET, content_type="application/json")
    assert response.status_code == 200, response.data


def messages(conn: psycopg.Connection) -> list[tuple[str, str, Any]]:
    """(id, type, body) of every outbox message, oldest first."""
    return [tuple(row) for row in conn.execute("SELECT id, type, body FROM webhook_messages ORDER BY created_at, id")]


def expand(conn: psycopg.Connection) -> int:
    """What the worker does before it claims: write the deliveries of committed status changes."""
    row = conn.execute("SELECT webhook_expand_fan_outs(1000000)").fetchone()
    return int(row[0]) if row else 0


def deliveries(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    """(endpoint url, message type, status) of every delivery, once the waiting fan-outs are expanded."""
    expand(conn)
    return [tuple(row) for row in conn.execute(
        "SELECT e.url, m.type, d.status FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
        " JOIN webhook_messages m ON m.id = d.message_id ORDER BY m.created_at, e.url"
    )]
