"""A long snapshot does not make claims slower: each claim reads the queue from its process's floor
(store/jobs.py, ClaimFloors), and no job below the floor is left behind for longer than the full scan."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from mailer import store
from mailer.services import apps, queueing
from mailer.store import jobs as jobs_store
from mailer.store.queries import query

SPREAD = 3000  # jobs, due one a second apart, all claimed before the snapshot's jobs come


@pytest.fixture
def app_id(conn: psycopg.Connection) -> int:
    return apps.create_app(conn, "floors")[0].id


def queue(conn: psycopg.Connection, app_id: int, count: int, priority: str = "transactional") -> list[str]:
    jobs = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]},
                            priority=priority) for n in range(count)]
    return [str(answer["id"]) for answer in queueing.insert(conn, app_id, jobs, 50)]


def claim(conn: psycopg.Connection, floors: jobs_store.ClaimFloors | None, **kwargs: Any) -> jobs_store.Claim:
    """One claim in its own transaction, its floors moved once it committed, as the sender makes it."""
    with conn.transaction():
        taken = store.claim_due_jobs(conn, limit=kwargs.pop("limit", 50), floors=floors, **kwargs)
    taken.commit_floors()
    return taken


def lane_blocks(conn: psycopg.Connection, floors: dict[str, Any] | None) -> int:
    """The buffers a claim reads in the transactional lane's index scan (EXPLAIN ANALYZE, rolled back)."""
    params = jobs_store.claim_params(limit=50, max_bytes=2**31 - 1, sender_id=None, floors=floors)
    with conn.transaction(force_rollback=True):
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query("claim_due_jobs"),  # type: ignore[operator]
                            params).fetchone()[0][0]["Plan"]  # type: ignore[index]
    scans = [node for node in _nodes(plan) if node.get("Index Name") == "jobs_due_idx"
             and node.get("Subplan Name") is None and node["Actual Loops"] > 0]
    return sum(node["Shared Hit Blocks"] + node["Shared Read Blocks"] for node in scans)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_a_claim_reads_past_the_jobs_a_long_snapshot_pins_only_below_its_floor(conn, app_id, database_url) -> None:
    queue(conn, app_id, SPREAD + 50)
    conn.execute("UPDATE jobs SET run_at = now() - interval '1 minute'")  # one send_at for all: a newsletter
    conn.execute("ANALYZE jobs")
    floors = jobs_store.ClaimFloors(margin_s=0.01, full_scan_s=3600)
    with psycopg.connect(database_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM jobs")  # from now on, no claimed job's entry can go
        for _ in range(SPREAD // 50):
            assert len(claim(conn, floors)) == 50
        time.sleep(0.05)  # past the margin: the floor is the last job claimed

        from_the_start = lane_blocks(conn, None)
        from_the_floor = lane_blocks(conn, floors.start())
        reader.rollback()

    # From the start, the scan visits the heap page of every job claimed since the snapshot (a dozen or so
    # jobs a page); from the floor, those of the 50 left.
    assert from_the_start > 80
    assert from_the_floor < from_the_start / 4
    assert len(claim(conn, floors)) == 50


def test_a_job_that_became_due_below_the_floor_is_claimed_at_the_next_full_scan(conn, app_id) -> None:
    floors = jobs_store.ClaimFloors(margin_s=0.01, full_scan_s=1.5)
    queue(conn, app_id, 3)
    assert len(claim(conn, floors)) == 3  # the first claim reads from the start
    [late] = queue(conn, app_id, 1)
    conn.execute("UPDATE jobs SET run_at = now() - interval '1 minute' WHERE id = %s", [late])  # committed late
    time.sleep(0.05)  # past the margin: the floor is the last job claimed

    assert not claim(conn, floors).jobs
    time.sleep(1.6)
    assert [str(job.id) for job in claim(conn, floors)] == [late]


def test_a_job_committed_within_the_margin_is_not_left_below_the_floor(conn, app_id) -> None:
    floors = jobs_store.ClaimFloors(margin_s=3600, full_scan_s=3600)
    claim(conn, floors)  # the full scan of a process's first claim
    queue(conn, app_id, 3)
    assert len(claim(conn, floors)) == 3
    [late] = queue(conn, app_id, 1)
    conn.execute("UPDATE jobs SET run_at = now() - interval '1 minute' WHERE id = %s", [late])

    assert [str(job.id) for job in claim(conn, floors)] == [late]  # the floor is where claims were an hour ago


def test_a_job_a_claim_locked_but_left_is_the_next_claims_though_another_claim_got_further(
    conn, app_id, database_url
) -> None:
    floors = jobs_store.ClaimFloors(margin_s=0.01, full_scan_s=3600)
    ids = queue(conn, app_id, 4)
    conn.execute("UPDATE jobs SET run_at = now() - make_interval(secs => 100 - o.n), message_bytes = 100 "
                 "FROM unnest(%s::uuid[]) WITH ORDINALITY AS o(id, n) WHERE jobs.id = o.id", [ids])
    assert [str(job.id) for job in claim(conn, floors, limit=1)] == ids[:1]

    with psycopg.connect(database_url) as other:
        with conn.transaction():  # locks jobs 2 and 3, takes job 2 only (job 3 does not fit), still running
            first = store.claim_due_jobs(conn, limit=2, max_bytes=150, floors=floors)
            assert [str(job.id) for job in first] == ids[1:2]
            with other.transaction():  # skips the locked ones: takes job 4, and commits first
                second = store.claim_due_jobs(other, limit=2, floors=floors)
            assert [str(job.id) for job in second] == ids[3:4]
            second.commit_floors()  # the floor is past job 3 once the margin has passed
        first.commit_floors()
    time.sleep(0.05)

    assert [str(job.id) for job in claim(conn, floors)] == ids[2:3]
    assert not claim(conn, floors).jobs


def test_lanes_keep_their_order_with_floors(conn, app_id) -> None:
    floors = jobs_store.ClaimFloors(margin_s=2, full_scan_s=3600)
    bulk = set(queue(conn, app_id, 3, priority="bulk"))
    first = {str(job.id) for job in claim(conn, floors, limit=2)}
    assert first < bulk  # the bulk lane's floor moves
    transactional = set(queue(conn, app_id, 2))

    assert {str(job.id) for job in claim(conn, floors, limit=2)} == transactional  # before the bulk job left
    assert {str(job.id) for job in claim(conn, floors, limit=2)} == bulk - first
    assert not claim(conn, floors).jobs
