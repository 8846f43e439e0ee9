"""The operator's view across apps (the `mailer` command line): whose job, which app, recent jobs, a live tail."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from mailer import store
from mailer.domain import errors
from mailer.domain.timefmt import rfc3339
from mailer.store import operator as operator_store

# A tail reads at most this many audit events per query (it reads again at once when it got that many).
TAIL_BATCH = 5000
# An id the tail has not seen but a higher one has is a transaction that has not committed yet, or one that
# rolled back: it is looked for again for this long.
TAIL_GRACE_S = 10.0
# A jump in ids larger than this is not a set of transactions in flight (a restored database, say).
MAX_GAP = 10_000


def parse_job_id(raw: str) -> uuid.UUID:
    """A job id from the command line; anything that is not a UUID is simply unknown."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.NotFound(f"no job {raw}") from None


def app_of_job(conn: psycopg.Connection, job_id: uuid.UUID) -> int:
    """The id of the app a job belongs to (NotFound for an unknown job)."""
    row = operator_store.get_job_app(conn, job_id=job_id)
    if row is None:
        raise errors.NotFound(f"no job {job_id}")
    return int(row["app_id"])


def app_id_by_name(conn: psycopg.Connection, name: str) -> int:
    """The id of the app with this name, revoked or not (NotFound otherwise)."""
    row = operator_store.get_app_by_name(conn, name=name)
    if row is None:
        raise errors.NotFound(f"no app named {name!r}")
    return int(row["id"])


@dataclasses.dataclass(frozen=True)
class JobLine:
    """One line of `mailer logs`: a job at a moment (created, or one step of its audit trail)."""

    at: dt.datetime
    job_id: uuid.UUID
    app: str
    status: str
    recipients: tuple[str, ...]

    def __str__(self) -> str:
        return "\t".join((rfc3339(self.at) or "", str(self.job_id), self.app, self.status, ",".join(self.recipients)))


def recent_jobs(
    conn: psycopg.Connection, *, limit: int, app_id: int | None = None, status: str | None = None
) -> list[JobLine]:
    """The newest `limit` jobs (of one app, in one status), oldest first as a log reads, with their status now."""
    with conn.transaction():
        store.force_custom_plans(conn)  # the optional filters fold away only in a custom plan
        rows = operator_store.list_recent_jobs(conn, limit=limit, app_id=app_id, status=status)
        addresses = _recipients(conn, [row["id"] for row in rows])
    return [
        JobLine(row["created_at"], row["id"], row["app"], row["status"], addresses[row["id"]])
        for row in reversed(rows)
    ]


class Tail:
    """The audit trail from a starting point on, each event once: new jobs and every change of status.

    Ids are taken when a row is inserted but seen when its transaction commits, so a lower id can appear
    after a higher one: ids skipped over are looked for again for TAIL_GRACE_S (then taken as rolled back).
    """

    def __init__(self, after_id: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._top = after_id
        self._gaps: dict[int, float] = {}  # id not seen yet -> when it was first missed
        self._clock = clock
        self.behind = False  # the last poll stopped at TAIL_BATCH events: poll again at once

    @classmethod
    def from_now(cls, conn: psycopg.Connection) -> Tail:
        """A tail of what happens from now on."""
        with conn.transaction():
            return cls(operator_store.get_last_job_event_id(conn))

    def poll(self, conn: psycopg.Connection, *, app_id: int | None = None, status: str | None = None) -> list[JobLine]:
        """What committed since the last poll (of one app, to one status), in id order."""
        with conn.transaction():
            late = operator_store.list_job_events_by_id(conn, ids=sorted(self._gaps))
            fresh = operator_store.list_job_events_after(conn, after_id=self._top, limit=TAIL_BATCH)
            self.behind = len(fresh) == TAIL_BATCH
            self._note(late, fresh)
            events = [
                row for row in sorted(late + fresh, key=lambda row: row["id"])
                if (app_id is None or row["app_id"] == app_id) and (status is None or row["type"] == status)
            ]
            addresses = _recipients(conn, list(dict.fromkeys(row["job_id"] for row in events)))
        return [JobLine(row["at"], row["job_id"], row["app"], row["type"], addresses[row["job_id"]]) for row in events]

    def _note(self, late: Sequence[dict[str, Any]], fresh: Sequence[dict[str, Any]]) -> None:
        now = self._clock()
        for row in late:
            self._gaps.pop(row["id"], None)
        expected = self._top + 1
        for row in fresh:
            if row["id"] - expected <= MAX_GAP:
                self._gaps.update(dict.fromkeys(range(expected, row["id"]), now))
            expected = row["id"] + 1
        self._top = expected - 1
        self._gaps = {event_id: since for event_id, since in self._gaps.items() if now - since < TAIL_GRACE_S}


def _recipients(conn: psycopg.Connection, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, ...]]:
    found: dict[uuid.UUID, list[str]] = collections.defaultdict(list)
    for row in store.list_recipients_of_jobs(conn, job_ids=job_ids):
        found[row["job_id"]].append(row["email"])
    return collections.defaultdict(tuple, {job_id: tuple(emails) for job_id, emails in found.items()})
