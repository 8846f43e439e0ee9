"""GET /logs and /stats stay fast on a big table: every query the API runs uses an index, never a Seq Scan
of jobs, and runs in well under 100 ms. Loads JOBS jobs for one app (plus three smaller apps); the same
load and checks at a million jobs: `python -m bench.logs_explain` (README, "Logs and stats")."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from bench import logs_explain
from mailer import create_app
from mailer.config import Settings
from tests.integration.conftest import make_key

JOBS = 200_000
MAX_EXECUTION_MS = 50  # measured: under 3 ms each at 1,000,000 jobs
INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
COUNTER_QUERIES = {"get_today_counts", "list_daily_counts"}


@dataclasses.dataclass(frozen=True)
class Big:
    url: str
    key: str
    loaded: logs_explain.Loaded


@pytest.fixture(scope="module")
def big(pg_cluster, template_db) -> Iterator[Big]:  # type: ignore[no-untyped-def]
    """One database with the big load, shared by this module's tests (loading takes ~10 s)."""
    dbname = "mailer_logs_explain"
    janitor = DatabaseJanitor(user="postgres", host="127.0.0.1", port=pg_cluster.port, dbname=dbname,
                              template_dbname=template_db)
    janitor.init()
    url = pg_cluster.url(dbname)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            key = make_key(conn, "big")
            app_id = conn.execute("SELECT id FROM apps WHERE name = 'big'").fetchone()[0]  # type: ignore[index]
            yield Big(url=url, key=key, loaded=logs_explain.load_jobs(conn, jobs=JOBS, app_id=app_id))
    finally:
        janitor.drop()


@pytest.fixture
def conn(big: Big) -> Iterator[psycopg.Connection]:
    with psycopg.connect(big.url, autocommit=True) as connection:
        yield connection


def test_the_load_is_what_the_cases_expect(big: Big, conn: psycopg.Connection) -> None:
    loaded = big.loaded
    counts = dict(conn.execute("SELECT app_id, count(*) FROM jobs GROUP BY app_id").fetchall())
    assert counts == {loaded.app_id: JOBS, **dict.fromkeys(loaded.other_app_ids, 20_000)}
    today = dict(conn.execute(
        "SELECT kind, sum(count)::int FROM job_counts"
        " WHERE app_id = %s AND day = (now() AT TIME ZONE 'UTC')::date GROUP BY kind",
        (loaded.app_id,),
    ).fetchall())
    assert today["sent"] == JOBS * 90 // 100  # the triggers counted the bulk load
    addressed = conn.execute(
        "SELECT count(*) FROM recipient_addresses WHERE app_id = %s AND email = %s",
        (loaded.app_id, logs_explain.RARE_ADDRESS),
    ).fetchone()
    assert addressed == (JOBS // logs_explain.ADDRESSES,)


def scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, relation or index) of every scan in a plan."""
    return [
        (node["Node Type"], node.get("Index Name") or node.get("Relation Name") or "")
        for node in logs_explain.plan_nodes(plan["Plan"]) if "Scan" in node["Node Type"]
    ]


CASES = [*logs_explain.log_cases(dt.datetime.now(dt.UTC)), "today counters", "stats, 366 days"]


@pytest.mark.parametrize("case", CASES)
def test_every_query_of_logs_and_stats_uses_an_index_and_is_fast(big: Big, conn: psycopg.Connection, case) -> None:
    query_name, params = logs_explain.all_cases(conn, big.loaded.app_id)[case]
    logs_explain.explain(conn, query_name, params)  # the first run reads the pages into the cache
    plan = logs_explain.explain(conn, query_name, params)

    found = scans(plan)
    if query_name in COUNTER_QUERIES:
        # Counters never read jobs. job_counts is small here: the stats may read it whole.
        assert {relation for _, relation in found} <= {"job_counts", "job_counts_pkey"}, found
        if query_name == "get_today_counts":
            assert any(kind in INDEX_SCANS for kind, _ in found), found
    else:
        # (An empty partition, such as a month ahead or jobs_live with nothing waiting, is read whole: nothing.)
        empty = {row[0] for row in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relpages = 0")}
        assert not [scan for scan in found if scan[0] == "Seq Scan" and scan[1] not in empty], found
        assert any(kind in INDEX_SCANS for kind, _ in found), found
    assert plan["Execution Time"] < MAX_EXECUTION_MS, (case, plan["Execution Time"], found)


def test_the_api_answers_fast_on_the_big_table(big: Big, settings: Settings) -> None:
    app = create_app(dataclasses.replace(settings, database_url=big.url))
    try:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {big.key}"}
        first = client.get("/logs", headers=auth)  # and warms the pool and the caches
        assert first.json["today"]["sent"] == JOBS * 90 // 100
        paths = ["/logs", "/logs?limit=1000", "/logs?status=failed", f"/logs?recipient={logs_explain.RARE_ADDRESS}",
                 "/logs?metadata.campaign=c7", "/logs?metadata.order_id=4242", "/logs?since=2026-01-01",
                 f"/logs?cursor={first.json['next_cursor']}", "/stats", "/stats?since=2026-01-01&until=2026-12-31"]
        for path in paths:
            started = time.perf_counter()
            response = client.get(path, headers=auth)
            elapsed_ms = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.json
            assert elapsed_ms < 500, (path, elapsed_ms)  # the whole request, JSON of 1000 jobs included
    finally:
        app.extensions["mailer.pool"].close()
