"""Senders: one per worker process, alive while its liveness connection holds the sender's advisory lock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer.store import _run

# The first key of every sender's advisory lock (pg_advisory_lock(int4, int4)), the second being its id:
# 'mlsn' as four bytes, so that it collides with no lock of another key space by chance.
SENDER_LOCK_NAMESPACE = 0x6D6C736E


def register_sender(conn: psycopg.Connection, *, host: str, os_pid: int) -> int:
    """A new sender, its lock held by `conn` (a session-level lock: `conn` must be a connection of its own)."""
    row = _run.one_row(conn, "register_sender", host=host, os_pid=os_pid, namespace=SENDER_LOCK_NAMESPACE)
    if row is None or not row["locked"]:
        raise RuntimeError("registering a sender returned no locked row")
    return int(row["id"])


def try_lock_sender(conn: psycopg.Connection, *, sender_id: int) -> bool:
    """Take sender `sender_id`'s lock on `conn` if nobody holds it."""
    row = _run.one_row(conn, "try_lock_sender", id=sender_id, namespace=SENDER_LOCK_NAMESPACE)
    return bool(row and row["locked"])


def unlock_sender(conn: psycopg.Connection, *, sender_id: int) -> None:
    """Give back the lock `conn` holds on sender `sender_id`."""
    _run.all_rows(conn, "unlock_sender", id=sender_id, namespace=SENDER_LOCK_NAMESPACE)


def stale_sender_backend(conn: psycopg.Connection, *, sender_id: int) -> int | None:
    """The pid of the sender's own earlier liveness backend, if it still holds the lock (the sender not retired)."""
    row = _run.one_row(conn, "stale_sender_backend", id=sender_id, namespace=SENDER_LOCK_NAMESPACE)
    return None if row is None else int(row["pid"])


def terminate_sender_backend(conn: psycopg.Connection, *, sender_id: int, pid: int) -> list[int]:
    """End backend `pid` if it still holds sender `sender_id`'s lock (not this one); the pids signalled. Raises
    when this role may not."""
    rows = _run.all_rows(conn, "terminate_sender_backend", id=sender_id, pid=pid, namespace=SENDER_LOCK_NAMESPACE)
    return [row["pid"] for row in rows if row["terminated"]]


def resume_sender(conn: psycopg.Connection, *, sender_id: int) -> bool:
    """Keep sender `sender_id` (its lock held again by `conn`) unless it was retired meanwhile."""
    return _run.one_row(conn, "resume_sender", id=sender_id) is not None


def renew_sender(conn: psycopg.Connection, *, sender_id: int) -> bool:
    """The heartbeat; False when the sender was retired."""
    return _run.one_row(conn, "renew_sender", id=sender_id) is not None


def sender_active(conn: psycopg.Connection, *, sender_id: int) -> bool:
    """Whether sender `sender_id` is not retired (without renewing it)."""
    return _run.one_row(conn, "sender_active", id=sender_id) is not None


def hold_sender(conn: psycopg.Connection, *, sender_id: int) -> bool:
    """In a claim's transaction: the sender is not retired, and is not until the transaction ends."""
    return _run.one_row(conn, "hold_sender", id=sender_id) is not None


def retire_lost_senders(conn: psycopg.Connection, *, grace_s: float, lease_s: float) -> list[dict[str, Any]]:
    """Retire dead and hung senders; the retired ones (id, rule, backend_pid, now: retired by this call)."""
    return _run.all_rows(
        conn, "retire_lost_senders", grace_s=grace_s, lease_s=lease_s, namespace=SENDER_LOCK_NAMESPACE
    )


def set_takeover_timeouts(conn: psycopg.Connection, *, lock_ms: int, statement_ms: int, idle_ms: int) -> None:
    """Bound the takeover's transaction: its lock waits, its statements, its pauses between them."""
    _run.all_rows(conn, "set_takeover_timeouts", lock_ms=lock_ms, statement_ms=statement_ms, idle_ms=idle_ms)


def take_over_lost_claims(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Requeue (to be checked first) the sending jobs of retired senders; id, app_id, priority, request_id,
    sender_id, rule."""
    return _run.all_rows(conn, "take_over_lost_claims")


def delete_spent_senders(conn: psycopg.Connection) -> list[int]:
    """Delete retired senders with no sending job left; their ids."""
    return [row["id"] for row in _run.all_rows(conn, "delete_spent_senders")]


def hold_claimed_jobs(
    conn: psycopg.Connection, *, sender_id: int, jobs: Sequence[tuple[uuid.UUID, int]]
) -> set[uuid.UUID]:
    """Lock the jobs (id, claimed attempt) this sender's claim still holds; their ids."""
    if not jobs:
        return set()
    rows = _run.all_rows(
        conn, "hold_claimed_jobs", sender_id=sender_id,
        ids=[job_id for job_id, _ in jobs], attempts=[attempts for _, attempts in jobs],
    )
    return {row["id"] for row in rows}
