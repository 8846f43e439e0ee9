"""Shared fixtures: a real PostgreSQL for the session, a fresh database (cloned from a migrated
template) for each test that asks for one."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator

import psycopg
import psycopg.conninfo
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from mailer import pgcluster
from mailer.config import Settings
from mailer.store import migrations

TEMPLATE_DB = "mailer_template"
EVENTS_AUTH = "mailjet:events-secret"
_counter = itertools.count()


@contextlib.contextmanager
def _throwaway_cluster(prefix: str) -> Iterator[pgcluster.Cluster]:
    """A PostgreSQL server in a temporary directory (started as an unprivileged user), removed afterwards."""
    base = tempfile.mkdtemp(prefix=prefix)
    cluster = pgcluster.Cluster(base_dir=pgcluster.pathlib.Path(base), port=pgcluster.free_port(), fast_unsafe=True)
    cluster.ensure_running()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def own_cluster() -> Iterator[pgcluster.Cluster]:
    """A cluster of the test's own, for a test that stops and starts it (an outage)."""
    with _throwaway_cluster("mailer-own-pg-") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgcluster.Cluster]:
    """A throwaway PostgreSQL server for the whole test session."""
    with _throwaway_cluster("mailer-test-pg-") as cluster:
        yield cluster


@contextlib.contextmanager
def running_bouncer(cluster: pgcluster.Cluster, **options: int) -> Iterator[pgcluster.Bouncer]:
    """Debian's PgBouncer in transaction mode in front of `cluster` (every database by its name)."""
    base = tempfile.mkdtemp(prefix="mailer-test-pgbouncer-")  # not under pytest's tmp_path: PgBouncer's user reads it
    bouncer = pgcluster.Bouncer(base_dir=pgcluster.pathlib.Path(base), port=pgcluster.free_port(),
                                server_port=cluster.port, **options)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer(pg_cluster: pgcluster.Cluster) -> Iterator[pgcluster.Bouncer]:
    """PgBouncer in transaction mode in front of the session's cluster."""
    with running_bouncer(pg_cluster) as bouncer:
        yield bouncer


@pytest.fixture
def pooled_settings(settings: Settings, database_url: str, pgbouncer: pgcluster.Bouncer) -> Settings:
    """The test's settings with DATABASE_URL through PgBouncer and the direct URL beside it."""
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    return dataclasses.replace(settings, database_url=pgbouncer.url(str(dbname)), direct_database_url=database_url)


@pytest.fixture(scope="module")
def pg_standby(pg_cluster: pgcluster.Cluster) -> Iterator[pgcluster.Cluster]:
    """A streaming replica of the session's cluster (pg_basebackup -R, hot standby), for one module's tests:
    while it runs it replays every test's database copy, so it stops with the module that wanted it."""
    from tests import replica_support

    base = tempfile.mkdtemp(prefix="mailer-test-standby-")
    standby = pgcluster.Cluster(base_dir=pgcluster.pathlib.Path(base), port=pgcluster.free_port(), fast_unsafe=True)
    standby.init_standby(pg_cluster, slot=replica_support.SLOT)
    try:
        standby.start()
        yield standby
    finally:
        standby.stop()
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:  # or the primary keeps WAL for it
            conn.execute("SELECT pg_drop_replication_slot(%s)", (replica_support.SLOT,))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def replica_url(database_url: str, pg_cluster: pgcluster.Cluster, pg_standby: pgcluster.Cluster) -> Iterator[str]:
    """The test's database on the standby, running, replaying, and caught up with the primary."""
    from tests import replica_support

    if not replica_support.is_running(pg_standby):  # a test that stopped it failed before it started it again
        pg_standby.start()
    replica_support.set_replay_paused(pg_standby, False)
    replica_support.wait_caught_up(pg_cluster, pg_standby)
    yield pg_standby.url(database_url.rsplit("/", 1)[1])
    if not replica_support.is_running(pg_standby):
        pg_standby.start()
    replica_support.set_replay_paused(pg_standby, False)  # else the drop of the test's database waits for it


def _janitor(cluster: pgcluster.Cluster, dbname: str, **kwargs: object) -> DatabaseJanitor:
    return DatabaseJanitor(user="postgres", host="127.0.0.1", port=cluster.port, dbname=dbname, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def template_db(pg_cluster: pgcluster.Cluster) -> str:
    """A database migrated once through `mailer db migrate`, marked as a template."""
    janitor = _janitor(pg_cluster, TEMPLATE_DB)
    janitor.init()
    migrations.migrate(pg_cluster.url(TEMPLATE_DB))
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {TEMPLATE_DB} WITH is_template true")
    return TEMPLATE_DB


@pytest.fixture
def database_url(pg_cluster: pgcluster.Cluster, template_db: str) -> Iterator[str]:
    """A fresh migrated database for one test, dropped afterwards."""
    dbname = f"mailer_test_{os.getpid()}_{next(_counter)}"
    janitor = _janitor(pg_cluster, dbname, template_dbname=template_db)
    janitor.init()
    try:
        yield pg_cluster.url(dbname)
    finally:
        janitor.drop()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """A direct connection to the test's database, for setting up and checking rows."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings pointing at the test database; Mailjet at an address nothing listens on."""
    return Settings(
        database_url=database_url,
        events_auth=EVENTS_AUTH,
        mailjet_api_url="http://127.0.0.1:9",
        mailjet_api_key="key",
        mailjet_api_secret="secret",
        send_backoff_base_s=0.01,
        send_backoff_cap_s=0.05,
    )
