"""GET /logs: newest first, keyset pages, filters, isolation, and the `today` counters kept by triggers."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from mailer import store
from mailer.services import wakeups
from tests.integration.conftest import make_key

ITEM_KEYS = ["id", "status", "priority", "created_at", "updated_at", "send_at", "attempts", "last_error", "metadata",
             "recipients"]


@pytest.fixture(autouse=True)
def _not_at_midnight() -> None:
    """The `today` counters change at 00:00 UTC: never start a test in its last seconds of a day."""
    now = dt.datetime.now(dt.UTC)
    left = (dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC) - now).total_seconds()
    if left < 15:
        time.sleep(left + 0.5)


def message(to: str = "ann@example.org", **extra: Any) -> dict[str, Any]:
    return {"from": {"email": "billing@example.com"}, "to": [{"email": to}], "subject": "Invoice", "text": "hi",
            **extra}


def queue(client, auth, **extra: Any) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/queue", json=message(**extra), headers=auth)
    assert response.status_code == 202, response.json
    return response.json["id"]


def app_id_of(conn: psycopg.Connection, name: str = "billing") -> int:
    """The id of an app made by make_key (the `auth` fixture's app is "billing")."""
    row = conn.execute("SELECT id FROM apps WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def insert_jobs(conn: psycopg.Connection, app_id: int, count: int, *, to: str = "bulk@example.org",
                metadata: dict[str, Any] | None = None) -> list[uuid.UUID]:
    """`count` queued jobs in one statement, the way POST /queue stores a batch."""
    ids = [uuid.uuid4() for _ in range(count)]
    store.insert_jobs(
        conn, app_id=app_id,
        jobs=[{"id": i, "priority": "bulk", "message": {"subject": "x"}, "metadata": metadata or {}, "send_at": None}
              for i in ids],
        recipients=[{"job_id": i, "kind": "to", "position": 0, "email": to, "name": None} for i in ids],
        wake=wakeups.send_target(50),
    )
    return ids


def get_logs(client, auth, query: str = "") -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.get(f"/logs{query}", headers=auth)
    assert response.status_code == 200, response.json
    assert response.mimetype == "application/json"
    assert list(response.json) == ["items", "next_cursor", "today"]
    return response.json


def walk(client, auth, query: str = "", limit: int = 3, between_pages: Any = None) -> list[str]:  # type: ignore[no-untyped-def]
    """Every id of every page, following next_cursor to the end."""
    ids: list[str] = []
    cursor = None
    while True:
        params = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "") + query
        page = get_logs(client, auth, params)
        assert len(page["items"]) <= limit
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
        assert len(page["items"]) == limit  # only the last page is short
        if between_pages:
            between_pages()


def ids_of(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def set_status(conn: psycopg.Connection, job_id: str, status: str) -> None:
    conn.execute("UPDATE jobs SET status = %s, updated_at = now() WHERE id = %s", (status, job_id))


def set_created(conn: psycopg.Connection, job_id: str, created_at: dt.datetime) -> None:
    conn.execute("UPDATE jobs SET created_at = %s WHERE id = %s", (created_at, job_id))
    conn.execute("UPDATE recipient_addresses SET created_at = %s WHERE job_id = %s", (created_at, job_id))


# --- order, shape, pages ---

def test_newest_first_with_the_short_form_of_each_job(client, auth) -> None:
    first = queue(client, auth, metadata={"order_id": 1}, cc=[{"email": "Cy@Example.org"}])
    second = queue(client, auth, send_at="2099-01-01T09:00:00+01:00", priority="bulk")
    third = queue(client, auth, to="bob@example.org")

    page = get_logs(client, auth)

    assert ids_of(page) == [third, second, first]
    assert page["next_cursor"] is None
    for item in page["items"]:
        assert list(item) == ITEM_KEYS
        assert item["created_at"].endswith("Z")
    assert page["items"][1] | {"created_at": None, "updated_at": None} == {
        "id": second, "status": "scheduled", "priority": "bulk", "created_at": None, "updated_at": None,
        "send_at": "2099-01-01T08:00:00.000Z", "attempts": 0, "last_error": None, "metadata": {},
        "recipients": [{"email": "ann@example.org", "kind": "to", "status": "pending"}],
    }
    assert page["items"][2]["metadata"] == {"order_id": 1}
    assert page["items"][2]["recipients"] == [
        {"email": "ann@example.org", "kind": "to", "status": "pending"},
        {"email": "Cy@Example.org", "kind": "cc", "status": "pending"},
    ]
    assert page["today"] == {"created": 3, "sent": 0, "failed": 0}


def test_an_app_without_jobs_gets_an_empty_page(client, auth) -> None:
    assert get_logs(client, auth) == {"items": [], "next_cursor": None, "today": {"created": 0, "sent": 0, "failed": 0}}


def test_pages_walk_every_job_once_even_when_a_batch_shares_one_created_at(client, auth) -> None:
    singles = [queue(client, auth) for _ in range(3)]
    batch = client.post("/queue", json={"messages": [message() for _ in range(7)]}, headers=auth).json["jobs"]
    later = queue(client, auth)
    # The batch's 7 jobs share created_at: the id breaks the tie, newest (highest) first.
    expected = [later, *sorted((job["id"] for job in batch), reverse=True), *reversed(singles)]

    for limit in (1, 2, 3, 10, 11, 12, 1000):
        assert walk(client, auth, limit=limit) == expected


def test_default_limit_is_50_and_a_full_last_page_still_ends(client, auth, conn) -> None:
    app_id = app_id_of(conn)
    insert_jobs(conn, app_id, 100)
    first = get_logs(client, auth)
    assert len(first["items"]) == 50
    second = get_logs(client, auth, f"?cursor={first['next_cursor']}")
    assert len(second["items"]) == 50
    assert second["next_cursor"] is None  # exactly 100: no empty third page
    assert len(set(ids_of(first)) | set(ids_of(second))) == 100


def test_walking_all_pages_while_another_thread_inserts_returns_each_job_exactly_once(
    client, auth, conn, database_url
) -> None:
    app_id = app_id_of(conn)
    existing: list[uuid.UUID] = []
    for _ in range(12):  # 12 statements: 12 distinct created_at, 20 jobs each
        existing += insert_jobs(conn, app_id, 20)
    inserted: list[uuid.UUID] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def insert_meanwhile() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                while not stop.is_set():
                    inserted.extend(insert_jobs(own, app_id, 3))  # committed when it returns
                    time.sleep(0.001)
        except Exception as exc:  # reported by the test
            failures.append(exc)

    def wait_for_new_jobs() -> None:
        """At least one batch commits between two pages (an OFFSET would then show a job twice)."""
        target = len(inserted) + 3
        deadline = time.monotonic() + 10
        while len(inserted) < target and not failures:
            assert time.monotonic() < deadline
            time.sleep(0.001)

    inserter = threading.Thread(target=insert_meanwhile)
    inserter.start()
    try:
        seen = walk(client, auth, limit=7, between_pages=wait_for_new_jobs)
    finally:
        stop.set()
        inserter.join(timeout=10)
    assert not failures
    assert len(inserted) > 3 * 30  # jobs kept arriving during the whole walk
    assert len(seen) == len(set(seen))  # nothing twice
    assert {str(i) for i in existing} <= set(seen)  # nothing that existed is missed
    assert set(seen) <= {str(i) for i in existing + inserted}


# --- filters ---

@pytest.fixture
def jobs(client, auth, conn) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Six jobs with different statuses, recipients, metadata and days."""
    made = {
        "a": queue(client, auth, to="ann@example.org", metadata={"order_id": 1001, "tags": ["vip", "eu"]}),
        "b": queue(client, auth, to="bob@example.org", cc=[{"email": "ANN@example.org"}],
                   metadata={"order_id": "1001"}),
        "c": queue(client, auth, to="cy@example.org", bcc=[{"email": "ann@EXAMPLE.org"}],
                   metadata={"order_id": 1002, "customer": {"id": 5, "tier": "gold"}}),
        "d": queue(client, auth, to="dee@example.org", metadata={"campaign": "spring sale"}),
        "e": queue(client, auth, to="ed@example.org"),
        "f": queue(client, auth, to="ann@example.org", metadata={"order_id": 1001, "campaign": "spring sale"}),
    }
    set_status(conn, made["a"], "sent")
    set_status(conn, made["b"], "failed")
    set_status(conn, made["c"], "sent")
    set_status(conn, made["d"], "cancelled")
    days = {"a": "2026-03-01T10:00:00Z", "b": "2026-03-02T10:00:00Z", "c": "2026-03-02T23:59:59.999999Z",
            "d": "2026-03-03T00:00:00Z", "e": "2026-03-04T12:00:00Z", "f": "2026-03-05T08:00:00Z"}
    for name, when in days.items():
        set_created(conn, made[name], dt.datetime.fromisoformat(when))
    return made


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "fedcba"),
        ("&status=sent", "ca"),
        ("&status=failed", "b"),
        ("&status=queued", "fe"),
        ("&status=sending", ""),
        ("&recipient=ann@example.org", "fcba"),  # to, cc and bcc, any case
        ("&recipient=ANN%40Example.ORG", "fcba"),
        ("&recipient=bob@example.org", "b"),
        ("&recipient=ann@example", ""),  # the whole address, not a part
        ("&since=2026-03-02", "fedcb"),
        ("&until=2026-03-02", "cba"),  # a day `until` includes that day
        ("&since=2026-03-02&until=2026-03-02", "cb"),
        ("&since=2026-03-02T10:00:00Z&until=2026-03-03T00:00:00Z", "cb"),  # `until` as a time: up to, excluded
        ("&since=2026-03-02T10:00:00.000001Z", "fedc"),
        ("&since=2026-03-03T01:00:00+01:00", "fed"),  # the offset counts: that is 00:00 UTC
        ("&since=2026-03-03T01:00:00%2B01:00", "fed"),
        ("&since=2026-03-03T01:00:00 01:00", "fed"),  # an unencoded '+' arrives as a space
        ("&until=2026-03-02T23:00:00-01:00", "cba"),
        ("&until=2026-03-02T22:59:59-01:00", "ba"),
        ("&metadata.order_id=1001", "fa"),  # the number 1001, not the string
        ("&metadata.order_id=%221001%22", "b"),  # "1001" in JSON: the string
        ("&metadata.campaign=spring%20sale", "fd"),  # not JSON: taken as text
        ("&metadata.campaign=%22spring%20sale%22", "fd"),
        ("&metadata.tags=%5B%22vip%22%5D", "a"),  # ["vip"]: the array contains it
        ("&metadata.customer=%7B%22tier%22%3A%22gold%22%7D", "c"),  # {"tier":"gold"}: nested containment
        ("&metadata.order_id=1001&metadata.campaign=spring%20sale", "f"),  # every key must match
        ("&metadata.nothing=1", ""),
        ("&status=sent&recipient=ann@example.org", "ca"),
        ("&status=queued&metadata.order_id=1001", "f"),
        ("&recipient=ann@example.org&since=2026-03-02&until=2026-03-04", "cb"),
        ("&recipient=ann@example.org&metadata.order_id=1001", "fa"),
        ("&status=sent&since=2026-03-02&metadata.order_id=1002&recipient=ann@example.org", "c"),
    ],
)
def test_each_filter_and_their_combinations(client, auth, jobs, query, expected) -> None:
    wanted = [jobs[name] for name in expected]
    assert ids_of(get_logs(client, auth, f"?limit=1000{query}")) == wanted
    assert walk(client, auth, query, limit=1) == wanted  # and page by page


def test_a_job_moved_to_another_day_is_found_on_that_day_only(client, auth, conn) -> None:
    job = queue(client, auth)
    set_created(conn, job, dt.datetime(2025, 12, 31, 23, 30, tzinfo=dt.UTC))
    assert ids_of(get_logs(client, auth, "?since=2025-12-31&until=2025-12-31")) == [job]
    assert ids_of(get_logs(client, auth, "?since=2026-01-01")) == []


def test_the_log_queries_are_planned_for_their_parameters(client, auth, monkeypatch) -> None:
    """A generic plan cannot drop the switched-off filters: measured 128 ms instead of 0.8 ms at 200,000 jobs."""
    modes = []
    list_logs = store.list_logs

    def spy(conn: psycopg.Connection, **kwargs: Any) -> list[dict[str, Any]]:
        modes.append(conn.execute("SHOW plan_cache_mode").fetchone()[0])  # type: ignore[index]
        return list_logs(conn, **kwargs)

    monkeypatch.setattr(store, "list_logs", spy)
    get_logs(client, auth, "?metadata.order_id=1")
    get_logs(client, auth, "?recipient=ann@example.org")
    assert modes == ["force_custom_plan", "force_custom_plan"]


# --- isolation ---

def test_another_apps_jobs_never_appear_and_its_counters_are_its_own(client, auth, conn) -> None:
    mine = queue(client, auth, to="shared@example.org", metadata={"order_id": 7})
    other = {"Authorization": f"Bearer {make_key(conn, 'other-app')}"}
    theirs = [queue(client, other, to="shared@example.org", metadata={"order_id": 7}) for _ in range(3)]
    set_status(conn, theirs[0], "sent")
    set_status(conn, theirs[1], "failed")

    for query in ("", "?recipient=shared@example.org", "?metadata.order_id=7", "?status=queued",
                  "?since=2000-01-01", "?limit=1"):
        assert ids_of(get_logs(client, auth, query)) == [mine]
    assert walk(client, auth, limit=1) == [mine]
    assert walk(client, other, limit=1) == list(reversed(theirs))
    assert get_logs(client, auth)["today"] == {"created": 1, "sent": 0, "failed": 0}
    assert get_logs(client, other)["today"] == {"created": 3, "sent": 1, "failed": 1}
    # Another app's cursor is only a position: it shows nothing of theirs.
    their_cursor = get_logs(client, other, "?limit=1")["next_cursor"]
    assert ids_of(get_logs(client, auth, f"?cursor={their_cursor}")) in ([], [mine])


def test_logs_and_stats_need_an_api_key(client) -> None:
    for path in ("/logs", "/stats", "/logs?limit=0"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
        assert client.get(path, headers={"Authorization": "Bearer mk_nope_nope"}).status_code == 401


# --- validation ---

def cursor_of(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def assert_422(client, auth, query: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.get(f"/logs{query}", headers=auth)
    assert response.status_code == 422, (query, response.json)
    assert response.json["error"]["code"] == "validation_error"
    return response.json["error"]["details"]


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "!!!!",
        "eyJ0Ijo",  # cut short
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        cursor_of([1, 2]),
        cursor_of({"t": "2026-11-22T10:00:00+00:00"}),
        cursor_of({"t": "2026-11-22T10:00:00+00:00", "id": "not-a-uuid"}),
        cursor_of({"t": "yesterday", "id": str(uuid.uuid4())}),
        cursor_of({"t": "2026-11-22T10:00:00", "id": str(uuid.uuid4())}),  # naive
        cursor_of({"t": 1, "id": str(uuid.uuid4())}),
        cursor_of({"t": "2026-11-22T10:00:00+00:00", "id": str(uuid.uuid4()), "x": 1}),
        cursor_of({"t": "2026-11-22T10:00:00+00:00", "id": str(uuid.uuid4())}) + "=",
        "A" * 500,
    ],
)
def test_a_cursor_that_is_not_ours_is_422(client, auth, cursor) -> None:
    assert set(assert_422(client, auth, f"?cursor={cursor}")) == {"cursor"}


def test_a_tampered_cursor_is_422(client, auth) -> None:
    for _ in range(3):
        queue(client, auth)
    cursor = get_logs(client, auth, "?limit=1")["next_cursor"]
    assert len(get_logs(client, auth, f"?limit=1&cursor={cursor}")["items"]) == 1
    for tampered in (cursor[:-2], cursor + "x", cursor[:5] + "*" + cursor[6:], cursor[::-1]):
        assert set(assert_422(client, auth, f"?cursor={tampered}")) == {"cursor"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=abc", "limit"),
        ("?limit=1.5", "limit"),
        ("?limit=", "limit"),
        ("?status=bogus", "status"),
        ("?status=SENT", "status"),
        ("?recipient=", "recipient"),
        ("?recipient=a%00b@example.org", "recipient"),
        ("?since=yesterday", "since"),
        ("?since=2026-11-22T10:00:00", "since"),  # no offset
        ("?since=2026-13-01", "since"),
        ("?since=2026-02-30", "since"),
        ("?since=22.11.2026", "since"),
        ("?since=20261122", "since"),
        ("?until=2026-11-22T25:00:00Z", "until"),
        ("?until=0001-01-01T00:00:00%2B01:00", "until"),  # before year 1 in UTC
        ("?since=2026-11-23&until=2026-11-22", "since"),
        ("?since=2026-11-22T10:00:00Z&until=2026-11-22T09:00:00Z", "since"),
        ("?since=2026-11-22T10:00:00Z&until=2026-11-22T10:00:00Z", "since"),  # an empty range
        ("?since=2026-11-23T00:00:00Z&until=2026-11-22", "since"),
        ("?unknown=1", "unknown"),
        ("?Status=sent", "Status"),
        ("?status=sent&status=failed", "status"),
        ("?metadata=%7B%7D", "metadata"),
        ("?metadata.=1", "metadata."),
        ("?metadata.n=1e999", "metadata.n"),
        ("?metadata.n=%22a%5Cu0000b%22", "metadata.n"),  # "a\u0000b": Postgres cannot store it
        ("?metadata.n=a%00b", "metadata.n"),
        (f"?metadata.n={'x' * 1001}", "metadata.n"),
        ("?" + "&".join(f"metadata.k{n}=1" for n in range(21)), "metadata"),
    ],
)
def test_a_bad_query_is_422_naming_the_parameter(client, auth, query, field) -> None:
    assert field in assert_422(client, auth, query)


def test_every_problem_is_named_at_once(client, auth) -> None:
    details = assert_422(client, auth, "?limit=0&status=nope&since=x&cursor=y&color=red")
    assert set(details) == {"limit", "status", "since", "cursor", "color"}


# --- today counters ---

def test_today_counts_creation_sending_failing_and_a_retry(client, auth, conn) -> None:
    app_id = app_id_of(conn)
    ids = [queue(client, auth) for _ in range(4)]
    assert get_logs(client, auth)["today"] == {"created": 4, "sent": 0, "failed": 0}
    assert client.delete(f"/queue/{ids[3]}", headers=auth).status_code == 200  # cancelled: not in `today`

    # As the sender records a batch (mailer/services/send_recording.py record): claim, then sent / failed.
    claimed = {str(job.id) for job in store.claim_due_jobs(conn, limit=3)}
    assert claimed == set(ids[:3])
    assert get_logs(client, auth)["today"] == {"created": 4, "sent": 0, "failed": 0}  # sending counts nothing
    with conn.transaction():
        store.mark_jobs_sent(conn, ids=[uuid.UUID(ids[0])])
        store.mark_jobs_failed(conn, failures=[{"id": ids[1], "error": "rejected"}, {"id": ids[2], "error": "no"}])
    assert get_logs(client, auth)["today"] == {"created": 4, "sent": 1, "failed": 2}
    assert store.mark_jobs_sent(conn, ids=[uuid.UUID(ids[0])]) == []  # no change, no count
    assert get_logs(client, auth)["today"] == {"created": 4, "sent": 1, "failed": 2}

    # failed → queued (retry) → sent: the failure stays counted, the send is counted too.
    assert client.post(f"/queue/{ids[1]}/retry", headers=auth).status_code == 202
    assert [job.id for job in store.claim_due_jobs(conn, limit=10)] == [uuid.UUID(ids[1])]
    store.mark_jobs_sent(conn, ids=[uuid.UUID(ids[1])])
    assert get_logs(client, auth)["today"] == {"created": 4, "sent": 2, "failed": 2}

    today = dt.datetime.now(dt.UTC).date().isoformat()
    day = client.get(f"/stats?since={today}&until={today}", headers=auth).json["days"]
    jobs_only = ("date", "created", "sent", "failed", "suppressed", "cancelled")
    assert [{kind: entry[kind] for kind in jobs_only} for entry in day] == [
        {"date": today, "created": 4, "sent": 2, "failed": 2, "suppressed": 0, "cancelled": 1}]
    counted = conn.execute(
        "SELECT kind, sum(count)::int FROM job_counts WHERE app_id = %s GROUP BY kind ORDER BY kind", (app_id,)
    ).fetchall()
    assert counted == [("cancelled", 1), ("created", 4), ("failed", 2), ("sent", 2)]


def test_a_change_counts_on_the_day_it_happens_and_creation_on_the_day_of_created_at(client, auth, conn) -> None:
    app_id = app_id_of(conn)
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    old = uuid.uuid4()
    conn.execute(
        "INSERT INTO jobs (id, app_id, status, priority, message, run_at, created_at, updated_at)"
        " VALUES (%s, %s, 'queued', 'bulk', '{}', %s, %s, %s)", (old, app_id, yesterday, yesterday, yesterday)
    )
    assert get_logs(client, auth)["today"] == {"created": 0, "sent": 0, "failed": 0}
    set_status(conn, str(old), "sent")  # sent today, created yesterday
    assert get_logs(client, auth)["today"] == {"created": 0, "sent": 1, "failed": 0}
    days = client.get("/stats?since=" + yesterday.date().isoformat(), headers=auth).json["days"]
    assert [(d["created"], d["sent"]) for d in days] == [(1, 0), (0, 1)]


def test_updates_that_do_not_reach_a_final_status_count_nothing(client, auth, conn) -> None:
    job = queue(client, auth)
    for status in ("scheduled", "queued", "sending", "queued"):
        set_status(conn, job, status)
    conn.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = %s", (job,))
    assert get_logs(client, auth)["today"] == {"created": 1, "sent": 0, "failed": 0}
    set_status(conn, job, "failed")
    conn.execute("UPDATE jobs SET last_error = 'again' WHERE id = %s", (job,))  # failed → failed
    assert get_logs(client, auth)["today"] == {"created": 1, "sent": 0, "failed": 1}


def counter_row_changes(conn: psycopg.Connection) -> int:
    """Rows of job_counts this session inserted or updated, as far as its statistics tell (compare two calls:
    PostgreSQL 15 also counts earlier transactions whose statistics it has not flushed yet)."""
    row = conn.execute(
        "SELECT n_tup_ins + n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'job_counts'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_of_500_is_one_counter_row_change_per_kind(client, auth, conn) -> None:
    app_id = app_id_of(conn)
    with conn.transaction():
        before = counter_row_changes(conn)
        ids = insert_jobs(conn, app_id, 500)
        assert counter_row_changes(conn) - before == 1  # created: inserted once, not 500 times
        insert_jobs(conn, app_id, 500)
        assert counter_row_changes(conn) - before == 2  # updated once
        conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = ANY(%s)", (ids,))
        assert counter_row_changes(conn) - before == 3  # cancelled: one row for 500 jobs
        conn.execute("UPDATE jobs SET status = 'sent' WHERE app_id = %s", (app_id,))  # 1000 jobs, 2 old statuses
        assert counter_row_changes(conn) - before == 4
    assert get_logs(client, auth)["today"] == {"created": 1000, "sent": 1000, "failed": 0}

    response = client.post("/queue", json={"messages": [message() for _ in range(500)]}, headers=auth)
    assert response.status_code == 202
    assert get_logs(client, auth)["today"] == {"created": 1500, "sent": 1000, "failed": 0}


def test_one_statement_for_several_apps_counts_each_app_apart(client, auth, conn) -> None:
    mine = app_id_of(conn)
    other_key = make_key(conn, "other-app")
    theirs = app_id_of(conn, "other-app")
    a = insert_jobs(conn, mine, 2)
    b = insert_jobs(conn, theirs, 3)
    with conn.transaction():
        before = counter_row_changes(conn)
        conn.execute("UPDATE jobs SET status = 'failed' WHERE id = ANY(%s)", (a + b,))
        assert counter_row_changes(conn) - before == 2  # (mine, failed) and (theirs, failed)
    assert get_logs(client, auth)["today"] == {"created": 2, "sent": 0, "failed": 2}
    other = {"Authorization": f"Bearer {other_key}"}
    assert get_logs(client, other)["today"] == {"created": 3, "sent": 0, "failed": 3}


def test_two_sessions_creating_jobs_for_one_app_at_once_do_not_wait_for_each_other(client, auth, conn,
                                                                                     database_url) -> None:
    """Each session bumps its own counter shard, so the counter row is no queue for an app's requests."""
    app_id = app_id_of(conn)
    with psycopg.connect(database_url, autocommit=True) as first:
        seconds = [psycopg.connect(database_url, autocommit=True) for _ in range(20)]
        try:
            second = next(c for c in seconds if c.info.backend_pid % 16 != first.info.backend_pid % 16)
            second.execute("SET lock_timeout = '2s'")
            with first.transaction():
                insert_jobs(first, app_id, 5)  # holds its counter row until the end of this transaction
                with second.transaction():
                    insert_jobs(second, app_id, 7)  # a single counter row would wait here, and time out
        finally:
            for connection in seconds:
                connection.close()
    assert get_logs(client, auth)["today"] == {"created": 12, "sent": 0, "failed": 0}


def test_a_job_born_final_counts_as_created_and_in_that_status(client, auth, conn) -> None:
    app_id = app_id_of(conn)
    conn.execute(
        "INSERT INTO jobs (id, app_id, status, priority, message, run_at)"
        " VALUES (%s, %s, 'suppressed', 'bulk', '{}', now())", (uuid.uuid4(), app_id)
    )
    today = dt.datetime.now(dt.UTC).date().isoformat()
    day = client.get(f"/stats?since={today}", headers=auth).json["days"]
    jobs_only = ("date", "created", "sent", "failed", "suppressed", "cancelled")
    assert [{kind: entry[kind] for kind in jobs_only} for entry in day] == [
        {"date": today, "created": 1, "sent": 0, "failed": 0, "suppressed": 1, "cancelled": 0}]


def test_every_recipient_address_of_a_job_is_indexed_once(client, auth, conn) -> None:
    job = queue(client, auth, to="Ann@Example.org", cc=[{"email": "ann@example.org"}, {"email": "bob@example.org"}])
    rows = conn.execute("SELECT email FROM recipient_addresses WHERE job_id = %s ORDER BY email", (job,)).fetchall()
    assert rows == [("ann@example.org",), ("bob@example.org",)]


def test_a_batch_indexes_each_jobs_addresses_with_that_jobs_app_and_time(client, auth, conn) -> None:
    batch = {"messages": [message("Ann@Example.org", bcc=[{"email": "ann@example.org"}]), message("bob@example.org")]}
    response = client.post("/queue", json=batch, headers=auth)
    assert response.status_code == 202, response.json
    ann, bob = (job["id"] for job in response.json["jobs"])
    rows = conn.execute(
        """SELECT a.job_id::text, a.email, a.app_id = j.app_id, a.created_at = j.created_at
           FROM recipient_addresses AS a JOIN jobs AS j ON j.id = a.job_id ORDER BY a.email"""
    ).fetchall()
    assert rows == [(ann, "ann@example.org", True, True), (bob, "bob@example.org", True, True)]


def test_the_page_and_todays_counters_read_one_snapshot(client, auth, conn, database_url, monkeypatch) -> None:
    # A job committing between the page query and the counters query must not count in `today` while
    # missing from the page (the same snapshot rule as /status).
    first = queue(client, auth)
    read_page = store.list_logs

    def page_then_another_job_commits(conn_, **kwargs):  # type: ignore[no-untyped-def]
        rows = read_page(conn_, **kwargs)
        with psycopg.connect(database_url) as other:
            insert_jobs(other, app_id_of(other), 1)
        return rows

    monkeypatch.setattr(store, "list_logs", page_then_another_job_commits)
    page = get_logs(client, auth)

    assert (ids_of(page), page["today"]["created"]) == ([first], 1)
    monkeypatch.undo()
    page = get_logs(client, auth)
    assert (len(page["items"]), page["today"]["created"]) == (2, 2)  # it did commit
