"""A streaming replica of the session's cluster, for the read-replica tests: catching up, pausing, stopping."""

from __future__ import annotations

import time

import psycopg

from mailer import pgcluster

SLOT = "mailer_test_replica"
CATCH_UP_S = 30.0  # a loaded 2-core box replays a test's writes in well under a second


def primary_position(primary: pgcluster.Cluster) -> str:
    """The end of what the primary has put in its WAL so far, committed or not.

    The insert position, not the write position: the test cluster commits asynchronously
    (synchronous_commit off), so a commit that answered may not be written yet, and a standby that replayed up
    to the write position may still miss it.
    """
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        return str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]


def wait_caught_up(primary: pgcluster.Cluster, standby: pgcluster.Cluster, timeout: float = CATCH_UP_S) -> None:
    """Wait until the standby has replayed all the primary has written so far."""
    target = primary_position(primary)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(standby.url(), autocommit=True, connect_timeout=2) as conn:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
                if done and done[0]:
                    return
        except psycopg.OperationalError:
            pass  # still starting
        if time.monotonic() > deadline:
            raise AssertionError(f"the standby did not replay up to {target} within {timeout} s")
        time.sleep(0.05)


def set_replay_paused(standby: pgcluster.Cluster, paused: bool) -> None:
    """Pause or resume the standby's replay (it keeps receiving WAL meanwhile)."""
    with psycopg.connect(standby.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def is_running(cluster: pgcluster.Cluster) -> bool:
    """Whether the server answers."""
    try:
        with psycopg.connect(cluster.url(), autocommit=True, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False
