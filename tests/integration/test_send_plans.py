"""The send path's statements reach the rows they need by key, whatever the planner thinks of the tables."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from mailer import store
from mailer.services import queueing
from mailer.store.queries import query


def _scans(plan: dict[str, Any]) -> set[tuple[str, str]]:
    found = {(plan["Node Type"], plan.get("Relation Name", ""))}
    for child in plan.get("Plans", []):
        found |= _scans(child)
    return found


def _index_names(plan: dict[str, Any]) -> set[str]:
    names = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        names |= _index_names(child)
    return names


def _history_read(plan: dict[str, Any]) -> set[str]:
    """The partitions of ended jobs a plan reads: none, for a statement about jobs in flight (0028)."""
    return {name for _, name in _scans(plan) if name.startswith("jobs_done")}


@pytest.mark.parametrize("statement", ["mark_jobs_sent", "mark_jobs_suppressed"])
def test_recording_a_batch_reads_its_jobs_by_primary_key_with_other_batches_in_flight(
    conn: psycopg.Connection, statement: str
):
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    jobs = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
            for n in range(5000)]
    queueing.insert(conn, app, jobs, 50)
    conn.execute("ANALYZE jobs")  # as autovacuum would have seen it: nothing being sent yet
    in_flight = [store.claim_due_jobs(conn, limit=50) for _ in range(8)]

    plan = conn.execute(
        "EXPLAIN (FORMAT JSON) " + query(statement),  # type: ignore[operator]  # a named query
        {"ids": [job.id for job in in_flight[0]]},
    ).fetchone()[0][0]["Plan"]

    # An index on status would look like one row to the planner (the statistics saw none in flight), and
    # reading it would read every job in flight.
    assert _index_names(plan) & {"jobs_live_pkey"} and not _index_names(plan) & {
        "jobs_app_status_created_idx", "jobs_sending_idx"}
    assert not _history_read(plan), _scans(plan)


def test_the_fence_on_a_claims_results_reads_its_jobs_by_primary_key_with_other_batches_in_flight(
    conn: psycopg.Connection,
):
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    jobs = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
            for n in range(5000)]
    queueing.insert(conn, app, jobs, 50)
    conn.execute("ANALYZE jobs")
    in_flight = [store.claim_due_jobs(conn, limit=50, sender_id=1) for _ in range(8)]

    plan = conn.execute(
        "EXPLAIN (FORMAT JSON) " + query("hold_claimed_jobs"),  # type: ignore[operator]  # a named query
        {"ids": [job.id for job in in_flight[0]], "attempts": [job.attempts for job in in_flight[0]],
         "sender_id": 1},
    ).fetchone()[0][0]["Plan"]

    assert _index_names(plan) & {"jobs_live_pkey"} and not _index_names(plan) & {
        "jobs_app_status_created_idx", "jobs_sending_idx"}
    assert not _history_read(plan), _scans(plan)


@pytest.mark.parametrize("statement", ["take_over_lost_claims", "delete_spent_senders"])
def test_the_takeover_reads_only_the_jobs_in_flight(conn: psycopg.Connection, statement: str):
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    jobs = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
            for n in range(5000)]
    queueing.insert(conn, app, jobs, 50)
    conn.execute("ANALYZE jobs")
    for _ in range(8):
        store.claim_due_jobs(conn, limit=50, sender_id=1)
    conn.execute("INSERT INTO senders (backend_pid, host, os_pid, retired_at) VALUES (0, 'h', 0, now())")

    plan = conn.execute("EXPLAIN (FORMAT JSON) " + query(statement)).fetchone()[0][0]["Plan"]  # type: ignore[operator]

    assert "jobs_sending_idx" in _index_names(plan) and ("Seq Scan", "jobs_live") not in _scans(plan)
    assert not _history_read(plan), _scans(plan)


def test_accepting_a_batch_never_scans_the_jobs_table(conn: psycopg.Connection):
    # Up to some 50,000 jobs a hash join over the whole table looks cheaper than 500 key lookups, which the
    # recipient_addresses trigger of 0004 chose for every batch; insert_jobs joins its own new rows (0012).
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    batches = [[queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
                for n in range(500)] for _ in range(3)]
    # One transaction: pg_stat_xact_* counts the current transaction's scans (across transactions, a
    # server's stats flush between them would reset the count to 0).
    with conn.transaction():
        queueing.insert(conn, app, batches[0], 50)
        conn.execute("ANALYZE jobs")
        for batch in batches[1:]:
            queueing.insert(conn, app, batch, 50)
        # (jobs_done's partitions are empty here: jobs_ids_unique's probe of this month's is a Seq Scan of nothing.)
        scans = conn.execute("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'jobs_live'").fetchone()
    assert scans == (0,)
    assert conn.execute("SELECT count(*) FROM recipient_addresses").fetchone() == (1500,)


def test_accepting_a_batch_looks_up_no_job_or_app_per_row(conn: psycopg.Connection):
    # A foreign key checks each new row with a query of its own (`SELECT ... FOR KEY SHARE`, an index scan
    # of the referenced table): recipients → jobs and jobs → apps were a quarter of a batch's PostgreSQL
    # time, so 0014 dropped them; insert_jobs writes jobs and recipients from one list.
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    batch = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
             for n in range(500)]
    with conn.transaction():  # the counts of this transaction (see above)
        queueing.insert(conn, app, batch, 50)
        lookups = conn.execute(
            "SELECT relname, idx_scan FROM pg_stat_xact_user_tables"
            " WHERE relname IN ('jobs_live', 'apps') ORDER BY relname"
        ).fetchall()
    # (jobs_ids_unique, 0028, probes jobs_done's month by primary key for each new id, in the same statement.)
    assert lookups == [("apps", 1), ("jobs_live", 0)]  # apps: once, for the batch's counter row (job_counts → apps)
    assert conn.execute("SELECT count(*) FROM recipients JOIN jobs ON jobs.id = recipients.job_id").fetchone() == (500,)


def test_the_final_status_counters_keep_a_linear_join_after_a_one_row_update(conn: psycopg.Connection):
    # The counter trigger's statement is planned once per session (0013). A nested loop over the two
    # transition tables, as a plan made for one row would be, is quadratic on a big update.
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    jobs = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
            for n in range(2000)]
    queueing.insert(conn, app, jobs, 50)
    plans: list[str] = []
    conn.add_notice_handler(lambda diagnostic: plans.append(diagnostic.message_primary or ""))
    for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = 'notice'"):
        conn.execute(f"SET auto_explain.{setting}")  # type: ignore[arg-type]  # constants
    conn.execute("LOAD 'auto_explain'")
    conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (jobs[0].id,))
    conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id <> %s", (jobs[0].id,))

    counter_plans = [plan for plan in plans if "INSERT INTO job_counts" in plan]
    assert len(counter_plans) == 2 and "Nested Loop" not in counter_plans[1], counter_plans
    assert conn.execute("SELECT sum(count) FROM job_counts WHERE kind = 'cancelled'").fetchone() == (2000,)


def test_a_claim_reads_the_hot_set_only_and_a_status_one_month_of_history(conn: psycopg.Connection):
    # 0028: jobs_live holds what a claim can take; an ended job is found in its id's month of jobs_done.
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    jobs = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
            for n in range(1000)]
    queueing.insert(conn, app, jobs, 50)
    conn.execute("UPDATE jobs SET status = 'sent' WHERE id = ANY(%s)", ([job.id for job in jobs[:900]],))
    conn.execute("ANALYZE jobs")

    claim = conn.execute(
        "EXPLAIN (FORMAT JSON) " + query("claim_due_jobs"),  # type: ignore[operator]  # a named query
        {"limit": 50, "max_bytes": 10_000_000, "sender_id": 1, "transactional_at": None,
         "transactional_id": "00000000-0000-0000-0000-000000000000", "bulk_at": None,
         "bulk_id": "00000000-0000-0000-0000-000000000000"},
    ).fetchone()[0][0]["Plan"]
    assert ("Index Scan", "jobs_live") in _scans(claim) or ("Seq Scan", "jobs_live") in _scans(claim)
    assert not _history_read(claim), _scans(claim)

    status = conn.execute(
        "EXPLAIN (FORMAT JSON) " + query("get_job"), {"id": jobs[0].id, "app_id": app}  # type: ignore[operator]
    ).fetchone()[0][0]["Plan"]
    month = conn.execute("SELECT tableoid::regclass::text FROM jobs WHERE id = %s", (jobs[0].id,)).fetchone()[0]
    assert _history_read(status) == {month}, _scans(status)


def _done_heap_blocks(conn: psycopg.Connection) -> int:
    """Heap blocks of ended jobs' partitions this transaction has read so far (this backend's own counts)."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_stat_get_xact_blocks_fetched(c.oid)), 0) FROM pg_class AS c"
        " WHERE c.relname LIKE 'jobs_done%%' AND c.relkind = 'r'"
    ).fetchone()
    return int(row[0])  # type: ignore[index]


def test_accepting_a_job_probes_the_ended_jobs_by_key_even_with_a_plan_made_while_there_were_none(
    conn: psycopg.Connection,
):
    # jobs_ids_unique (0028) checks each new id against jobs_done in PL/pgSQL, whose plan a session keeps: made
    # while jobs_done was empty (a new installation, a fresh month, the benchmark's emptied tables), it read the
    # whole partition for every job accepted on that connection afterwards, until an ANALYZE replaced it.
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    message = {"from": {"email": "a@example.com"}, "to": [{"email": "b@example.com"}], "subject": "s", "text": "t"}
    conn.execute("VACUUM ANALYZE jobs")
    queueing.insert(conn, app, [queueing.NewJob(message=dict(message))], 50)  # the session's plan, none ended
    for _ in range(20):
        queueing.insert(conn, app, [queueing.NewJob(message=dict(message)) for _ in range(100)], 50)
    conn.execute("UPDATE jobs SET status = 'sent' WHERE status = 'queued'")  # 2,001 ended jobs, not analyzed

    with conn.transaction():
        before = _done_heap_blocks(conn)
        queueing.insert(conn, app, [queueing.NewJob(message=dict(message))], 50)
        read = _done_heap_blocks(conn) - before

    assert read <= 2, read  # by its primary key, the one job is not found without reading the heap
    ended = conn.execute("SELECT id FROM jobs_done LIMIT 1").fetchone()[0]  # type: ignore[index]
    with pytest.raises(psycopg.errors.UniqueViolation, match="exists already"):  # and an ended job's id is found
        # (to a cc, so that no recipient of the ended job is written again: only the trigger refuses it)
        queueing.insert(conn, app, [queueing.NewJob(message={**message, "to": [], "cc": message["to"]}, id=ended)], 50)
