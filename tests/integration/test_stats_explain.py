"""GET /stats and the dashboard's overview across apps read the counters through an index at a realistic size:
APPS apps with every kind of counter on every day of more than a year, in several shards (far more than the
jobs tests' load leaves in job_counts). The same plans as tests/integration/test_logs_explain.py checks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from bench import logs_explain

APPS, DAYS, SHARDS = 30, 400, 2
KINDS = ("created", "sent", "failed", "suppressed", "cancelled",
         "delivered", "opened", "clicked", "bounced", "blocked", "spam", "unsubscribed")
MAX_EXECUTION_MS = 50  # measured: about 1 ms each
INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


@pytest.fixture
def loaded(conn: psycopg.Connection) -> list[int]:
    app_ids = [row[0] for row in conn.execute(
        "INSERT INTO apps (name, key_id, key_hash) SELECT 'app' || i, 'key' || i, '\\x00'::bytea"
        " FROM generate_series(1, %s) AS i RETURNING id", (APPS,))]
    conn.execute(
        "INSERT INTO job_counts (app_id, day, kind, shard, count)"
        " SELECT a, (now() AT TIME ZONE 'UTC')::date - d, k, s, 1 + (d + s) %% 7"
        " FROM unnest(%s::bigint[]) AS a, generate_series(0, %s) AS d, unnest(%s::text[]) AS k,"
        " generate_series(0, %s) AS s",
        (app_ids, DAYS - 1, list(KINDS), SHARDS - 1),
    )
    conn.execute("ANALYZE job_counts")
    return app_ids


def scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return [(node["Node Type"], node.get("Index Name") or node.get("Relation Name") or "")
            for node in logs_explain.plan_nodes(plan["Plan"]) if "Scan" in node["Node Type"]]


CASES = [("list_daily_counts", 14, True), ("list_daily_counts", 366, True),
         ("list_overview_counts", 14, False)]


def test_the_stats_queries_use_an_index_and_are_fast(conn, loaded) -> None:
    until = dt.datetime.now(dt.UTC).date()
    for query_name, days, per_app in CASES:  # one load for all (about 2 s)
        params: dict[str, Any] = {"since": until - dt.timedelta(days=days - 1), "until": until}
        if per_app:
            params["app_id"] = loaded[len(loaded) // 2]
        else:
            params["left_out"] = loaded[:1]
        logs_explain.explain(conn, query_name, params)
        plan = logs_explain.explain(conn, query_name, params)

        found = scans(plan)
        assert not [scan for scan in found if scan[0] == "Seq Scan"], (query_name, found)
        assert any(kind in INDEX_SCANS for kind, _ in found), (query_name, found)
        assert {index for _, index in found} <= {"job_counts", "job_counts_pkey", "job_counts_day_idx"}, found
        # Shards summed; the overview: a total per app and kind, and a sum per day and kind, nothing more.
        assert plan["Plan"]["Actual Rows"] == (days * len(KINDS) if per_app else (APPS + days) * len(KINDS))
        assert plan["Execution Time"] < MAX_EXECUTION_MS, (query_name, plan["Execution Time"], found)
        print(query_name, days, logs_explain.describe(plan), plan["Execution Time"])
