"""The status tables SQL enforces agree exactly with mailer/domain/statuses.py."""

from __future__ import annotations

import re

import psycopg
import pytest

from mailer.domain import statuses
from mailer.services import queueing


def _allowed_by_check(conn, constraint: str) -> set[str]:
    definition = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s", (constraint,)
    ).fetchone()[0]
    return set(re.findall(r"'([a-z]+)'::text", definition))


def test_recipient_statuses_table_matches_the_ranks(conn):
    rows = dict(conn.execute("SELECT status, rank FROM recipient_statuses").fetchall())
    assert rows == statuses.RECIPIENT_STATUS_RANK


def test_job_statuses_table_matches_the_job_statuses(conn):
    rows = dict(conn.execute("SELECT status, final FROM job_statuses").fetchall())
    assert set(rows) == set(statuses.JOB_STATUSES)
    assert len(statuses.JOB_STATUSES) == len(set(statuses.JOB_STATUSES))
    assert {status for status, final in rows.items() if final} == statuses.FINAL_JOB_STATUSES


def test_cancellable_statuses_are_not_final():
    assert set(statuses.JOB_STATUSES) >= statuses.CANCELLABLE_JOB_STATUSES
    assert not statuses.CANCELLABLE_JOB_STATUSES & statuses.FINAL_JOB_STATUSES


def test_the_priorities_are_those_the_jobs_table_allows(conn):
    check = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'jobs_priority_check'"
    ).fetchone()[0]
    assert sorted(word for word in ("transactional", "bulk") if f"'{word}'" in check) == sorted(statuses.PRIORITIES)


def test_the_status_checks_allow_exactly_the_statuses(conn):
    assert _allowed_by_check(conn, "jobs_status_check") == set(statuses.JOB_STATUSES)
    assert _allowed_by_check(conn, "recipients_status_check") == set(statuses.RECIPIENT_STATUS_RANK)
    assert _allowed_by_check(conn, "mailjet_events_status_check") == set(statuses.RECIPIENT_STATUS_RANK)


@pytest.mark.parametrize("table", ["jobs", "recipients"])
def test_an_unknown_status_is_refused(conn, table):
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    job = queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": "b@example.com"}]})
    queueing.insert(conn, app, [job], 50)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(f"UPDATE {table} SET status = 'lost'")  # noqa: S608  # one of two fixed table names
