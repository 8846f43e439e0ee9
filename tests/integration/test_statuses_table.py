"""The status tables SQL enforces agree exactly with mailer/domain/statuses.py."""

from __future__ import annotations

from mailer.domain import statuses


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
