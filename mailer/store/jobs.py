"""Jobs (which are also the send queue), their recipients, audit trail and idempotency keys."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from mailer.store import _run


@dataclasses.dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    app_id: int
    priority: str
    message: dict[str, Any]
    attempts: int
    verify_before_send: bool
    request_id: str | None = None  # of the API call that queued it, for the worker's log lines
    message_bytes: int = 0  # the message's size as JSON text (the claim bounds their sum)
    revoked: bool = False  # its app is revoked (claimed only to ask Mailjet about an earlier attempt)
    lost_attempt_age_s: float | None = None  # since the attempt whose outcome is unknown, in the database's clock
    test: bool = False  # a test app's job: answered by the sender itself (test mode), never sent to Mailjet


def insert_jobs(
    conn: psycopg.Connection,
    *,
    app_id: int,
    jobs: Sequence[dict[str, Any]],
    recipients: Sequence[dict[str, Any]],
    wake: dict[str, object],
    key_id: str | None = None,
    count_on_waiting: bool = False,
    from_domains: Sequence[str] | None = None,
) -> dict[uuid.UUID, dict[str, Any]]:
    """Insert jobs with their recipients, first audit event and the senders' wake-ups (`wake`: what
    mailer_wake_senders defers, counting on a waiting one if `count_on_waiting`); their status and run_at by
    id. With `key_id`, only if it is still the app's active key, with `from_domains` only if the app may send
    from each of these domains (nothing is inserted otherwise)."""
    rows = _run.all_rows(
        conn, "insert_jobs", app_id=app_id, key_id=key_id,
        from_domains=None if from_domains is None else list(from_domains), jobs=_run.jsonb(list(jobs)),
        recipients=_run.jsonb(list(recipients)), count_on_waiting=count_on_waiting, **wake,
    )
    return {row["id"]: row for row in rows}


def get_job(conn: psycopg.Connection, *, app_id: int, job_id: uuid.UUID) -> dict[str, Any] | None:
    """One job of one app, or None (another app's job is as unknown as a missing one)."""
    return _run.one_row(conn, "get_job", id=job_id, app_id=app_id)


def list_recipients(conn: psycopg.Connection, *, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """A job's recipients in the order they were given."""
    return _run.all_rows(conn, "list_recipients", job_id=job_id)


def list_job_events(conn: psycopg.Connection, *, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """A job's audit trail, oldest first."""
    return _run.all_rows(conn, "list_job_events", job_id=job_id)


@dataclasses.dataclass(frozen=True)
class Claim:
    """The jobs a claim took, those of revoked apps it cancelled instead (their message left out), and whether
    it stopped at a limit (so that more may be due)."""

    jobs: list[ClaimedJob]
    cancelled: list[ClaimedJob]
    more: bool
    _floors: ClaimFloors | None = None
    _reached: tuple[dict[str, Key | None], dict[str, Key | None]] | None = None

    def commit_floors(self) -> None:
        """Once the claim committed: the process's next claims start where this one got to."""
        if self._floors is not None and self._reached is not None:
            self._floors.reached(*self._reached)

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[ClaimedJob]:
        return iter(self.jobs)


# A lane's place in jobs_due_idx: (run_at, id).
Key = tuple[dt.datetime, uuid.UUID]
NO_ID = uuid.UUID(int=0)
LANES = ("transactional", "bulk")  # the queue's lanes, by priority


class ClaimFloors:
    """Where a process's next claim starts reading each lane of the queue, so that its cost stays flat while a
    long snapshot pins the index entries of the jobs claimed since it began (sql/queries/jobs.sql).

    A lane's floor is the last job, (run_at, id), that the process's claims had taken `margin_s` ago. A job
    below it is one whose transaction committed more than `margin_s` after it began: every statement that
    makes a job due sets its run_at to its transaction's now() or later, and its id (time-ordered) at the
    start of the request. A job a claim locked but left (too big for that call) is the next claim's to start
    from, once. Every `full_scan_s` a claim reads both lanes from the start, for what slipped below (a late
    commit, a job a rolled-back claim of another process had locked), so that no job waits longer for it.
    What a claim walks past is the jobs claimed (by every process) in the last `margin_s`.
    """

    def __init__(self, *, margin_s: float = 2.0, full_scan_s: float = 10.0) -> None:
        self.margin_s = margin_s
        self.full_scan_s = full_scan_s
        self._lock = threading.Lock()
        self._taken: dict[str, collections.deque[tuple[float, Key]]] = {lane: collections.deque() for lane in LANES}
        self._settled: dict[str, Key | None] = dict.fromkeys(LANES)
        self._left: dict[str, Key | None] = dict.fromkeys(LANES)
        self._full_scan_due = time.monotonic()

    def start(self) -> dict[str, Key | None]:
        """Each lane's floor for a claim about to run (None: from the start); the jobs left are its to find."""
        now = time.monotonic()
        with self._lock:
            left, self._left = self._left, dict.fromkeys(LANES)
            if now >= self._full_scan_due:
                self._full_scan_due = now + self.full_scan_s
                return dict.fromkeys(LANES)
            floors: dict[str, Key | None] = {}
            for lane, taken in self._taken.items():
                while taken and taken[0][0] <= now - self.margin_s:
                    self._settled[lane] = taken.popleft()[1]
                floors[lane] = _lowest(self._settled[lane], left[lane])
            return floors

    def reached(self, reached: dict[str, Key | None], left: dict[str, Key | None]) -> None:
        """Note what a committed claim took last, and first left, in each lane."""
        now = time.monotonic()
        with self._lock:
            for lane, key in reached.items():
                taken = self._taken[lane]
                last = taken[-1][1] if taken else self._settled[lane]
                if key is not None and (last is None or key > last):
                    taken.append((now, key))
            for lane, key in left.items():
                self._left[lane] = _lowest(self._left[lane], key)


def _lowest(*keys: Key | None) -> Key | None:
    found = [key for key in keys if key is not None]
    return min(found) if found else None


def claim_params(
    *, limit: int, max_bytes: int, sender_id: int | None, floors: dict[str, Key | None] | None
) -> dict[str, Any]:
    """The parameters of claim_due_jobs (bench/snapshot_claims.py explains it with them)."""
    params: dict[str, Any] = {"limit": limit, "max_bytes": max_bytes, "sender_id": sender_id}
    for lane in LANES:
        key = (floors or {}).get(lane)
        params[f"{lane}_at"], params[f"{lane}_id"] = key if key is not None else (None, NO_ID)
    return params


def claim_due_jobs(
    conn: psycopg.Connection, *, limit: int, max_bytes: int = 2**31 - 1, sender_id: int | None = None,
    floors: ClaimFloors | None = None,
) -> Claim:
    """Mark due jobs as sending by `sender_id`, up to `limit` jobs and `max_bytes` of message (at least one);
    cancel the due jobs of revoked apps it comes across. Without a sender (tests), the claim is recovered by age
    like one of the release before sender liveness. With `floors`, each lane is read from the process's floor,
    moved once the caller's transaction commits (`Claim.commit_floors`); without, from the start."""
    params = claim_params(limit=limit, max_bytes=max_bytes, sender_id=sender_id,
                          floors=floors.start() if floors else None)
    rows = _run.all_rows(conn, "claim_due_jobs", **params)
    reached: dict[str, Key | None] = dict.fromkeys(LANES)
    left: dict[str, Key | None] = {lane: _left(rows[0], lane) if rows else None for lane in LANES}
    for row in rows:
        key, lane = (row.pop("due_at"), row["id"]), row["priority"]
        reached[lane] = max(reached[lane] or key, key)
        for column in _FLOOR_COLUMNS:
            del row[column]
    more = [row.pop("more") for row in rows]  # the same on every row
    cancelled = [row.pop("cancelled") for row in rows]
    return Claim(
        jobs=[ClaimedJob(**row) for row, gone in zip(rows, cancelled, strict=True) if not gone],
        cancelled=[ClaimedJob(**row) for row, gone in zip(rows, cancelled, strict=True) if gone],
        more=any(more),
        _floors=floors,
        _reached=(reached, left),
    )


def _left(row: dict[str, Any], lane: str) -> Key | None:
    at, job_id = row[f"{lane}_left_at"], row[f"{lane}_left_id"]
    return None if at is None else (at, job_id)


_FLOOR_COLUMNS = ("transactional_left_at", "transactional_left_id", "bulk_left_at", "bulk_left_id")


def release_jobs(conn: psycopg.Connection, *, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """Put sending jobs never tried back in the queue, due now, their attempt uncounted; run_at by id."""
    if not ids:
        return {}
    return {row["job_id"]: row["run_at"] for row in _run.all_rows(conn, "release_jobs", ids=list(ids))}


def recheck_jobs(conn: psycopg.Connection, *, ids: Sequence[uuid.UUID], delay_s: float) -> dict[uuid.UUID, Any]:
    """Put sending jobs back in the queue uncounted, to be looked up again `delay_s` after their lost attempt."""
    if not ids:
        return {}
    return {row["job_id"]: row["run_at"] for row in _run.all_rows(conn, "recheck_jobs", ids=list(ids), delay_s=delay_s)}


def cancel_revoked_jobs(conn: psycopg.Connection, *, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Cancel sending jobs of revoked apps (audit app_revoked by the sender); the ids that changed."""
    if not ids:
        return []
    return [row["job_id"] for row in _run.all_rows(conn, "cancel_revoked_jobs", ids=list(ids))]


def mark_jobs_sent(conn: psycopg.Connection, *, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Mark sending jobs as sent; the ids that changed."""
    if not ids:  # nothing to do: spare the round trip and the statement triggers
        return []
    return [row["job_id"] for row in _run.all_rows(conn, "mark_jobs_sent", ids=list(ids))]


def set_recipient_message_ids(conn: psycopg.Connection, *, recipients: Sequence[dict[str, Any]]) -> None:
    """Store Mailjet's per-recipient MessageIDs (job_id, kind, position, message_id, message_uuid)."""
    if not recipients:
        return
    job_ids = sorted({str(row["job_id"]) for row in recipients})
    _run.all_rows(conn, "set_recipient_message_ids", recipients=_run.jsonb(list(recipients)), job_ids=job_ids)


def mark_jobs_failed(conn: psycopg.Connection, *, failures: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    """Fail sending jobs with their error (id, error); the ids that changed."""
    if not failures:
        return []
    return [row["job_id"] for row in _run.all_rows(conn, "mark_jobs_failed", failures=_run.jsonb(list(failures)))]


def requeue_jobs(conn: psycopg.Connection, *, retries: Sequence[dict[str, Any]]) -> dict[uuid.UUID, dt.datetime]:
    """Put sending jobs back in the queue after a delay (id, error, delay_s, ambiguous); run_at by id."""
    if not retries:
        return {}
    rows = _run.all_rows(conn, "requeue_jobs", retries=_run.jsonb(list(retries)))
    return {row["job_id"]: row["run_at"] for row in rows}


def lock_idempotency_key(conn: psycopg.Connection, *, app_id: int, key: str) -> bool:
    """Hold the key for this transaction; False when another request holds it."""
    row = _run.one_row(conn, "lock_idempotency_key", app_id=app_id, key=key)
    return bool(row and row["locked"])


def get_idempotency_key(conn: psycopg.Connection, *, app_id: int, key: str, days: int) -> dict[str, Any] | None:
    """The stored outcome of an earlier request with this key in the last `days`."""
    return _run.one_row(conn, "get_idempotency_key", app_id=app_id, key=key, days=days)


def insert_idempotency_key(
    conn: psycopg.Connection, *, app_id: int, key: str, request_hash: str, response_status: int, response_body: Any
) -> None:
    """Remember a request's outcome under its key."""
    _run.all_rows(
        conn,
        "insert_idempotency_key",
        app_id=app_id,
        key=key,
        request_hash=request_hash,
        response_status=response_status,
        response_body=_run.jsonb(response_body),
    )
