"""GET /activity while 8 writers commit concurrently: nothing skipped, nothing repeated (issue 22).

Each writer holds some of its transactions open a little before committing, so row ids (and transaction ids)
are taken in one order and committed in another: a cursor on the row id alone skips the late committers."""

from __future__ import annotations

import random
import threading
import time

import psycopg

WRITERS = 8
JOBS_PER_WRITER = 8
STATUSES = ("sent", "delivered")  # each job's recipient changes twice
WALK_TIMEOUT_S = 60.0  # writers finish in about a second; a bound, not an expectation


def _queue_jobs(client, auth, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    messages = [{"from": {"email": "billing@example.com"}, "to": [{"email": f"r{n}@example.org"}],
                 "subject": "Invoice", "text": "hi"} for n in range(count)]
    response = client.post("/queue", json={"messages": messages}, headers=auth)
    assert response.status_code == 202, response.data
    return [job["id"] for job in response.json["jobs"]]


def _writer(database_url: str, job_ids: list[str], seed: int, errors: list[BaseException]) -> None:
    """Change each job's recipient twice, a transaction per change, some held open 20-150 ms before COMMIT."""
    rng = random.Random(seed)  # noqa: S311  # a test's timing, not a secret
    try:
        with psycopg.connect(database_url) as conn:
            for status in STATUSES:
                for job_id in job_ids:
                    with conn.transaction():
                        conn.execute("UPDATE recipients SET status = %s WHERE job_id = %s", (status, job_id))
                        if rng.random() < 0.5:
                            time.sleep(rng.uniform(0.02, 0.15))
    except BaseException as exc:  # the main thread reports it
        errors.append(exc)


def test_a_walk_during_concurrent_commits_returns_every_change_once(client, auth, conn, database_url):
    job_ids = _queue_jobs(client, auth, WRITERS * JOBS_PER_WRITER)
    errors: list[BaseException] = []
    writers = [threading.Thread(target=_writer, args=(database_url, job_ids[n::WRITERS], n, errors))
               for n in range(WRITERS)]
    for thread in writers:
        thread.start()

    seen: list[int] = []
    cursor: str | None = None
    deadline = time.monotonic() + WALK_TIMEOUT_S
    while True:
        writing = any(thread.is_alive() for thread in writers)
        query = {"limit": "5", **({"cursor": cursor} if cursor else {})}
        response = client.get("/activity", query_string=query, headers=auth)
        assert response.status_code == 200, response.data
        seen.extend(item["id"] for item in response.json["items"])
        cursor = response.json["next_cursor"]
        if not writing and not response.json["items"]:
            break  # the writers had ended before this page was read, and it was the last
        assert time.monotonic() < deadline, "the walk did not end"
        if not response.json["items"]:
            time.sleep(0.005)
    for thread in writers:
        thread.join()
    assert errors == []

    everything = [row[0] for row in conn.execute(
        "SELECT a.id FROM recipient_activity a JOIN apps ON apps.id = a.app_id WHERE apps.name = 'billing' "
        "ORDER BY a.xid, a.id")]
    assert len(everything) == WRITERS * JOBS_PER_WRITER * len(STATUSES)
    assert len(seen) == len(set(seen)), "a change came twice"
    assert sorted(set(everything) - set(seen)) == [], "changes were skipped"
    assert seen == everything  # and in commit order
