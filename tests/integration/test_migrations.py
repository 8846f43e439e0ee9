"""`mailer db migrate`: idempotent, recorded, safe when two run at once."""

from __future__ import annotations

import concurrent.futures
import pathlib

import procrastinate
import psycopg

from mailer.store import migrations


def test_migrate_again_applies_nothing(database_url: str) -> None:
    assert migrations.migrate(database_url) == []


def test_every_migration_and_procrastinate_are_recorded(conn: psycopg.Connection) -> None:
    names = {row[0] for row in conn.execute("SELECT name FROM mailer_migrations")}
    assert {"0000_migrations_table", "0001_core", f"procrastinate:{procrastinate.__version__}"} <= names
    assert conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone() == (True,)


def test_two_migrations_at_once_on_an_empty_database(pg_cluster) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS migrate_race")
        admin.execute("CREATE DATABASE migrate_race")
    url = pg_cluster.url("migrate_race")
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(migrations.migrate, [url, url]))
        applied_once = sorted(results, key=len)
        assert applied_once[0] == []  # the second waited for the first, then had nothing to do
        assert "0001_core" in applied_once[1]
        with psycopg.connect(url) as conn:
            counts = conn.execute("SELECT name, count(*) FROM mailer_migrations GROUP BY name HAVING count(*) > 1")
            assert counts.fetchall() == []
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute("DROP DATABASE migrate_race WITH (FORCE)")


def test_procrastinate_fetches_by_index_with_a_plan_made_on_an_empty_queue(database_url: str) -> None:
    # Procrastinate's fetch_job query is the function migrate tunes (sql/queries/migrations.sql).
    queries = (pathlib.Path(procrastinate.__file__).parent / "sql" / "queries.sql").read_text()
    assert "FROM procrastinate_fetch_job_v2(" in queries.split("-- fetch_job --")[1].split("\n\n")[0]
    plans: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE procrastinate_jobs")  # empty, as it usually is
        worker = conn.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT procrastinate_fetch_job_v2(NULL, %s)", (worker,))  # the session's plan is made now
        conn.execute("INSERT INTO procrastinate_jobs (queue_name, task_name, priority, args)"
                     " SELECT 'send', 'mailer.send_due_jobs', 10, '{}' FROM generate_series(1, 400)")
        conn.add_notice_handler(lambda diagnostic: plans.append(diagnostic.message_primary or ""))
        for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = 'notice'"):
            conn.execute(f"SET auto_explain.{setting}")  # type: ignore[arg-type]  # constants
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SELECT procrastinate_fetch_job_v2(NULL, %s)", (worker,))
    fetch = [plan for plan in plans if "WITH candidate AS" in plan]
    # A sequential scan here runs once per waiting job: quadratic in the queue.
    assert len(fetch) == 1 and "Seq Scan" not in fetch[0], fetch
