"""`mailer db migrate`: our numbered migrations, then Procrastinate's schema, each recorded once."""

from __future__ import annotations

import datetime
import logging
import pathlib
import re
import time

import procrastinate
import psycopg
from procrastinate import schema as procrastinate_schema

from mailer.store import _run, partitions
from mailer.store.queries import SQL_DIR

PROCRASTINATE_PREFIX = "procrastinate:"
# Months of partitions made ahead by every migrate (MAILER_PARTITIONS_AHEAD_MONTHS's default).
DEFAULT_PARTITIONS_AHEAD_MONTHS = 3
# How long each parent's partition DDL may wait for a lock here (MAILER_PARTITION_LOCK_TIMEOUT_MS's default).
DEFAULT_PARTITION_LOCK_TIMEOUT_MS = 1000
# How long each migration may wait for a lock before it gives up and is tried again (MAILER_MIGRATION_LOCK_TIMEOUT_S's
# default): a migration queued behind a long transaction would queue every writer of that table behind itself.
DEFAULT_MIGRATION_LOCK_TIMEOUT_S = 5
# Tries of one migration that hit lock_timeout, and the pause between them (doubled each time).
MIGRATION_ATTEMPTS = 5
MIGRATION_RETRY_PAUSE_S = 1.0
log = logging.getLogger(__name__)
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def migrate(conninfo: str, connect_timeout_s: int = 5,
            lock_timeout_s: float = DEFAULT_MIGRATION_LOCK_TIMEOUT_S) -> list[str]:
    """Apply everything not yet applied; the names applied. Safe to run concurrently.

    `connect_timeout_s`: MAILER_DB_CONNECT_TIMEOUT_S; `lock_timeout_s`: MAILER_MIGRATION_LOCK_TIMEOUT_S.
    """
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout_s) as conn:
        _run.all_rows(conn, "lock_migrations")
        try:
            return _apply_pending(conn, lock_timeout_s)
        finally:
            _run.all_rows(conn, "unlock_migrations")


def _apply_pending(conn: psycopg.Connection, lock_timeout_s: float) -> list[str]:
    files = sorted((SQL_DIR / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))
    with conn.transaction():
        conn.execute(files[0].read_text())  # type: ignore[arg-type]  # the migrations table itself
    applied = {row["name"] for row in _run.all_rows(conn, "list_applied_migrations")}
    done: list[str] = []
    for path in files:
        if path.stem not in applied:
            apply_with_retry(conn, path.stem, path.read_text(), lock_timeout_s)
            done.append(path.stem)
    done.extend(_apply_procrastinate(conn, applied))
    _run.all_rows(conn, "plan_procrastinate_fetch_by_index")  # every time (sql/queries/migrations.sql)
    # Every time too: a fresh install (or one whose housekeeping was down) has this month's partitions and
    # the next ones before anything is written (the hourly housekeeping keeps them ahead after that).
    with conn.transaction():
        _, failed = partitions.ensure_registered_partitions(
            conn, datetime.datetime.now(datetime.UTC).date(), ahead=DEFAULT_PARTITIONS_AHEAD_MONTHS,
            lock_timeout_ms=DEFAULT_PARTITION_LOCK_TIMEOUT_MS)
    if failed:
        log.warning("migrate: months ahead not made for %s (housekeeping tries again hourly; see the database log)",
                    ", ".join(failed))
    return done


def _apply_procrastinate(conn: psycopg.Connection, applied: set[str]) -> list[str]:
    current = PROCRASTINATE_PREFIX + procrastinate.__version__
    if current in applied:
        return []
    recorded = sorted((name for name in applied if name.startswith(PROCRASTINATE_PREFIX)), key=_version_of)
    if not recorded:
        present = _run.one_row(conn, "procrastinate_schema_exists")
        if present and present["present"]:
            raise RuntimeError("Procrastinate's schema exists but was not installed by mailer; migrate it by hand")
        _apply(conn, current, procrastinate_schema.SchemaManager.get_schema())
        return [current]
    since = _version_of(recorded[-1])
    migrations_dir = pathlib.Path(procrastinate_schema.SchemaManager.get_migrations_path())
    for path in sorted(migrations_dir.glob("*.sql")):
        if since < _version_of(path.name) <= _version_of(current):
            with conn.transaction():
                conn.execute(path.read_text())  # type: ignore[arg-type]  # Procrastinate's own files
    _apply(conn, current, "")
    return [current]


class MigrationLockError(RuntimeError):
    """A migration that could not take its locks in any of its tries; nothing of it was applied."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"migration {name} {why} on every try and was not applied; find the transaction holding "
                         "its lock in pg_locks (or wait for it to end), then run `mailer db migrate` again")
        self.name = name


def apply_with_retry(conn: psycopg.Connection, name: str, sql: str, lock_timeout_s: float,
                     attempts: int = MIGRATION_ATTEMPTS, pause_s: float = MIGRATION_RETRY_PAUSE_S) -> None:
    """Apply one migration, each try waiting at most `lock_timeout_s` for any lock; raise after `attempts` tries."""
    for attempt in range(1, attempts + 1):
        try:
            _apply(conn, name, sql, lock_timeout_s)
            return
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
            # A deadlock with a running writer (a table's ACCESS EXCLUSIVE taken after another's) rolled the
            # migration back whole, as a lock timeout does: the same retry fits it.
            why = ("was chosen to end a deadlock" if isinstance(exc, psycopg.errors.DeadlockDetected)
                   else f"waited {lock_timeout_s:.1f} s for a lock")
            if attempt == attempts:
                log.error("migrate: %s %s on the last of %d tries; nothing of it was applied"
                          " (see pg_locks for the transaction holding its lock, then run migrate again)",
                          name, why, attempts)
                raise MigrationLockError(name, why) from exc
            log.warning("migrate: %s %s (try %d of %d); rolled back, trying again in %.1f s",
                        name, why, attempt, attempts, pause_s)
            time.sleep(pause_s)
            pause_s *= 2


def _apply(conn: psycopg.Connection, name: str, sql: str, lock_timeout_s: float | None = None) -> None:
    with conn.transaction():
        if lock_timeout_s is not None:
            _run.all_rows(conn, "set_migration_lock_timeout", timeout=f"{round(lock_timeout_s * 1000)}ms")
        if sql.strip():
            conn.execute(sql)  # type: ignore[arg-type]  # migration files are trusted
        _run.all_rows(conn, "record_migration", name=name)


def _version_of(name: str) -> tuple[int, int, int]:
    match = _VERSION.match(name.removeprefix(PROCRASTINATE_PREFIX))
    if not match:
        raise ValueError(f"not a versioned migration: {name}")
    major, minor, patch = (int(group) for group in match.groups())
    return (major, minor, patch)
