"""`mailer db migrate`: idempotent, recorded, safe when two run at once."""

from __future__ import annotations

import concurrent.futures

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
