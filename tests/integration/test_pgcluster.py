"""The private cluster of `mailer dev`, the tests and the benchmark: pg_ctl's failures are errors."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

import psycopg
import pytest

from mailer import pgcluster


@pytest.fixture
def initialized_cluster() -> Iterator[pgcluster.Cluster]:
    """A cluster made by initdb and never started."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="mailer-pgcluster-test-"))
    cluster = pgcluster.Cluster(base_dir=base, port=pgcluster.free_port(), fast_unsafe=True)
    cluster.init()
    try:
        yield cluster
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_test_cluster_gives_a_connection_5_s_to_start_up(conn: psycopg.Connection) -> None:
    # A client gone mid-handshake while Postgres stops holds the shutdown this long (60 s by default).
    assert conn.execute("SHOW authentication_timeout").fetchone() == ("5s",)


def test_a_failing_pg_ctl_stop_raises_with_what_pg_ctl_said(initialized_cluster: pgcluster.Cluster) -> None:
    pid_file = initialized_cluster.data_dir / "postmaster.pid"
    pid_file.write_text(f"{_a_pid_nobody_has()}\n{initialized_cluster.data_dir}\n")
    owner = pgcluster._run_as_user()
    if owner:
        os.chown(pid_file, owner.pw_uid, owner.pw_gid)
    with pytest.raises(pgcluster.ClusterError, match="could not send stop signal"):
        initialized_cluster.stop()


def test_stopping_a_cluster_that_is_not_running_is_no_error(initialized_cluster: pgcluster.Cluster) -> None:
    initialized_cluster.stop()


def _a_pid_nobody_has() -> int:
    for pid in range(4_000_000, 3_000_000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid found")
