"""The whole story of a job, as GET /status shows it."""

from __future__ import annotations

import collections
import uuid
from typing import Any

import psycopg

from mailer import store
from mailer.domain import errors
from mailer.domain.timefmt import rfc3339


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """The fields of a job that /status and /logs both show, in the documented order."""
    return {
        "id": str(job["id"]),
        "status": job["status"],
        "priority": job["priority"],
        "created_at": rfc3339(job["created_at"]),
        "updated_at": rfc3339(job["updated_at"]),
        "send_at": rfc3339(job["send_at"]),
        "attempts": job["attempts"],
        "last_error": job["last_error"],
        "metadata": job["metadata"],
    }


def job_status(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID) -> dict[str, Any]:
    """Job, recipients with their event timelines, and the audit trail; NotFound for others' jobs."""
    job = store.get_job(conn, app_id=app_id, job_id=job_id)
    if job is None:
        raise errors.NotFound(f"no job {job_id}")
    timelines: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for event in store.list_recipient_events(conn, job_id=job_id):
        timelines[event["recipient_id"]].append({"type": event["type"], "at": rfc3339(event["at"])})
    return {
        **job_summary(job),
        "schedule_id": None if job["schedule_id"] is None else str(job["schedule_id"]),
        "template": None if job["template_id"] is None else {
            "id": str(job["template_id"]), "version": job["template_version"],
        },
        "test": bool(job["test"]),
        "recipients": [
            {
                "email": recipient["email"],
                "kind": recipient["kind"],
                "message_id": None if recipient["message_id"] is None else str(recipient["message_id"]),
                "status": recipient["status"],
                "events": timelines.get(recipient["id"], []),
            }
            for recipient in store.list_recipients(conn, job_id=job_id)
        ],
        "events": [
            _audit_event(event) for event in store.list_job_events(conn, job_id=job_id)
        ],
    }


def _audit_event(event: dict[str, Any]) -> dict[str, Any]:
    shown = {"type": event["type"], "at": rfc3339(event["at"])}
    if event["detail"]:
        shown["detail"] = event["detail"]
    return shown
