"""`mailer db migrate` under load: each migration waits at most its lock timeout, then rolls back and tries again;
the engagement counters' migration (0046) takes its locks in the sender's order, so it never deadlocks with it."""

from __future__ import annotations

import logging
import pathlib
import re
import threading
import time

import psycopg
import pytest

from mailer.store import migrations
from tests.integration.webhooks_support import queue

MIGRATIONS = pathlib.Path(__file__).resolve().parents[2] / "sql" / "migrations"
PROBE = "ALTER TABLE job_counts ADD COLUMN probe integer"  # needs ACCESS EXCLUSIVE on job_counts


def has_probe(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT count(*) FROM information_schema.columns"
                             " WHERE table_name = 'job_counts' AND column_name = 'probe'").fetchone()[0])


def test_a_migration_behind_a_held_lock_gives_up_and_succeeds_once_it_is_gone(database_url, conn, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="mailer.store.migrations")
    holder = psycopg.connect(database_url)
    holder.execute("LOCK TABLE job_counts IN ACCESS SHARE MODE")  # a long reader's transaction
    release = threading.Timer(1.0, holder.commit)
    release.start()
    started = time.monotonic()
    try:
        with psycopg.connect(database_url, autocommit=True) as migrator:
            migrations.apply_with_retry(migrator, "9999_probe", PROBE, lock_timeout_s=0.2, attempts=8, pause_s=0.3)
    finally:
        release.join()
        holder.close()
    assert time.monotonic() - started >= 1.0
    waits = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert waits and all("9999_probe waited 0.2 s for a lock" in w for w in waits), waits
    assert has_probe(conn)
    assert conn.execute("SELECT count(*) FROM mailer_migrations WHERE name = '9999_probe'").fetchone() == (1,)


def test_a_migration_whose_lock_never_frees_fails_having_applied_nothing(database_url, conn, caplog) -> None:
    with psycopg.connect(database_url) as holder, psycopg.connect(database_url, autocommit=True) as migrator:
        holder.execute("LOCK TABLE job_counts IN ACCESS SHARE MODE")
        with pytest.raises(migrations.MigrationLockError, match=r"9999_probe waited 0\.2 s for a lock on every try"):
            migrations.apply_with_retry(migrator, "9999_probe", PROBE, lock_timeout_s=0.2, attempts=2, pause_s=0.1)
    assert "9999_probe waited 0.2 s for a lock on the last of 2 tries" in caplog.text
    assert not has_probe(conn)
    assert conn.execute("SELECT count(*) FROM mailer_migrations WHERE name = '9999_probe'").fetchone() == (0,)


def revert_0046(conn: psycopg.Connection) -> None:
    """The schema as 0045 left it: 0039's triggers (no counting), no recipient counters."""
    conn.execute("DELETE FROM job_counts WHERE kind NOT IN ('created', 'sent', 'failed', 'suppressed', 'cancelled')")
    text = (MIGRATIONS / "0039_activity_feed.sql").read_text()
    for name in ("activity_recipients_updated", "activity_recipient_inserted"):
        found = re.search(rf"CREATE FUNCTION {name}\(\).*?\n\$\$;", text, re.S)
        assert found, name
        conn.execute(found.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))  # type: ignore[arg-type]


def test_the_counting_migration_does_not_deadlock_with_the_senders_record(client, auth, conn, database_url) -> None:
    # The reviewer's race against 0042 as it was (recipients, then job_counts' ACCESS EXCLUSIVE lock): the sender's
    # record bumps job_counts through the jobs trigger, then updates recipients, and one of the two was aborted.
    job_id = queue(client, auth)
    conn.execute("UPDATE jobs SET status = 'sending' WHERE id = %s", (job_id,))
    conn.execute("UPDATE recipients SET status = 'sent' WHERE job_id = %s", (job_id,))
    revert_0046(conn)
    migration = (MIGRATIONS / "0046_engagement_counting.sql").read_text()
    outcome: dict[str, str] = {}

    def migrate() -> None:
        with psycopg.connect(database_url, autocommit=True) as migrator:
            try:
                migrations.apply_with_retry(migrator, "0046_again", migration, lock_timeout_s=5, attempts=1)
                outcome["migration"] = "ok"
            except (psycopg.Error, migrations.MigrationLockError) as exc:
                outcome["migration"] = f"{type(exc).__name__}: {exc}"

    with psycopg.connect(database_url) as sender:
        sender.execute("UPDATE jobs SET status = 'sent' WHERE id = %s", (job_id,))  # jobs → job_counts
        thread = threading.Thread(target=migrate)
        thread.start()
        time.sleep(0.5)  # the migration holds SHARE on recipients by now (the old 0042 then waited on job_counts)
        try:
            sender.execute("UPDATE recipients SET status = 'delivered' WHERE job_id = %s", (job_id,))  # → recipients
            sender.commit()
            outcome["sender"] = "ok"
        except psycopg.Error as exc:
            outcome["sender"] = f"{type(exc).__name__}: {exc}"
        thread.join(30)
    assert outcome == {"migration": "ok", "sender": "ok"}
    # The sender's change, made after the migration's triggers, is counted by them (the backfill did not see it).
    assert conn.execute("SELECT sum(count)::int FROM job_counts WHERE kind = 'delivered'").fetchone() == (1,)
