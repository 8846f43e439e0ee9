"""Cancel and retry: the manual actions an app can take on one job."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg

from mailer import store
from mailer.domain import errors, statuses
from mailer.services import moves, wakeups
from mailer.store import actions


def cancel(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID) -> dict[str, str]:
    """Cancel a scheduled or queued job (Conflict once it is sending or later)."""
    return moves.again_if_moved(lambda: _cancel(conn, app_id, job_id))


def _cancel(conn: psycopg.Connection, app_id: int, job_id: uuid.UUID) -> dict[str, str]:
    with conn.transaction():
        if actions.cancel_job(conn, app_id=app_id, job_id=job_id):
            return {"id": str(job_id), "status": statuses.CANCELLED}
        job = _existing(conn, app_id, job_id)
    raise errors.Conflict(
        f"job {job_id} is {job['status']}; only scheduled or queued jobs can be cancelled",
        {"status": job["status"]},
    )


def retry(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID, batch_size: int) -> dict[str, str]:
    """Queue a failed job again, keeping its id and history (Conflict unless it is failed)."""
    return moves.again_if_moved(lambda: _retry(conn, app_id, job_id, batch_size))


def _retry(conn: psycopg.Connection, app_id: int, job_id: uuid.UUID, batch_size: int) -> dict[str, str]:
    with conn.transaction():
        retried = actions.retry_job(conn, app_id=app_id, job_id=job_id)
        if retried is not None:
            wakeups.wake_senders(conn, [(retried["priority"], None)], batch_size)
            return {"id": str(job_id), "status": statuses.QUEUED}
        job = _existing(conn, app_id, job_id)
    if job["status"] == statuses.FAILED:  # failed, yet retry_job left it: retention purged its body
        raise errors.Conflict(
            f"job {job_id} can no longer be retried: its body was purged (MAILER_RETENTION_BODY_DAYS)",
            {"status": job["status"], "body_purged": True},
        )
    raise errors.Conflict(
        f"job {job_id} is {job['status']}; only failed jobs can be retried", {"status": job["status"]}
    )


def reschedule(
    conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID, send_at: dt.datetime, batch_size: int
) -> dict[str, str]:
    """Move a job that still waits for its send_at (Conflict otherwise)."""
    return moves.again_if_moved(lambda: _reschedule(conn, app_id, job_id, send_at, batch_size))


def _reschedule(
    conn: psycopg.Connection, app_id: int, job_id: uuid.UUID, send_at: dt.datetime, batch_size: int
) -> dict[str, str]:
    with conn.transaction():
        moved = actions.reschedule_job(conn, app_id=app_id, job_id=job_id, send_at=send_at)
        if moved is not None:
            run_at = moved["run_at"] if moved["status"] == statuses.SCHEDULED else None
            # The wake-up deferred for the old time finds nothing due then: a harmless no-op.
            wakeups.wake_senders(conn, [(moved["priority"], run_at)], batch_size)
            return {"id": str(job_id), "status": moved["status"]}
        job = _existing(conn, app_id, job_id)
    raise errors.Conflict(
        f"job {job_id} is {job['status']}; only scheduled jobs can be moved", {"status": job["status"]}
    )


def _existing(conn: psycopg.Connection, app_id: int, job_id: uuid.UUID) -> dict:
    job = store.get_job(conn, app_id=app_id, job_id=job_id)
    if job is None:
        raise errors.NotFound(f"no job {job_id}")
    return job
