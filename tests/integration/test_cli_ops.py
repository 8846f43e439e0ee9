"""The operator's commands (`mailer status|logs|retry|suppressions|retention`), run as real processes."""

from __future__ import annotations

import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from mailer.services import actions, queueing
from tests.integration.conftest import make_key

MESSAGE: dict[str, Any] = {
    "from": {"email": "billing@example.com"},
    "to": [{"email": "ann@example.org"}],
    "cc": [{"email": "bob@example.org"}],
    "subject": "Your invoice",
    "text": "hello",
}


def mailer(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "mailer.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def app_id(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM apps WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def make_job(conn: psycopg.Connection, app: int, **message: Any) -> uuid.UUID:
    job = queueing.NewJob(message=MESSAGE | message)
    with conn.transaction():
        queueing.insert(conn, app, [job], 50)
    return job.id


def set_status(conn: psycopg.Connection, job: uuid.UUID, status: str, days: int = 0) -> None:
    conn.execute(
        "UPDATE jobs SET status = %s, updated_at = now() - make_interval(days => %s) WHERE id = %s", (status, days, job)
    )


def fails_clearly(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# --- status --------------------------------------------------------------------------------------------


def test_status_prints_what_get_status_shows(database_url, conn, client, auth) -> None:
    job = make_job(conn, app_id(conn, "billing"))
    set_status(conn, job, "failed")
    conn.execute("INSERT INTO job_events (job_id, type, detail) VALUES (%s, 'failed', '{\"error\": \"boom\"}')", (job,))
    result = mailer(database_url, "status", str(job))
    assert result.returncode == 0, result.stderr
    assert result.stdout == client.get(f"/status/{job}", headers=auth).get_data(as_text=True)  # byte for byte
    story = json.loads(result.stdout)
    assert story["status"] == "failed"
    assert story["events"][-1] == {"type": "failed", "at": story["events"][-1]["at"], "detail": {"error": "boom"}}


def test_status_sees_every_app_and_refuses_unknown_ids(database_url, conn) -> None:
    make_key(conn, "shop")
    job = make_job(conn, app_id(conn, "shop"))
    assert json.loads(mailer(database_url, "status", str(job)).stdout)["id"] == str(job)
    fails_clearly(mailer(database_url, "status", str(uuid.uuid4())), "no job")
    fails_clearly(mailer(database_url, "status", "not-a-uuid"), "no job not-a-uuid")


# --- logs ----------------------------------------------------------------------------------------------


def test_logs_lists_recent_jobs_of_every_app_oldest_first(database_url, conn) -> None:
    make_key(conn, "billing")
    make_key(conn, "shop")
    first = make_job(conn, app_id(conn, "billing"))
    second = make_job(conn, app_id(conn, "shop"), to=[{"email": "cy@example.org"}], cc=[])
    third = make_job(conn, app_id(conn, "billing"))
    set_status(conn, third, "sent")

    lines = mailer(database_url, "logs").stdout.splitlines()
    assert [line.split("\t")[1:] for line in lines] == [
        [str(first), "billing", "queued", "ann@example.org,bob@example.org"],
        [str(second), "shop", "queued", "cy@example.org"],
        [str(third), "billing", "sent", "ann@example.org,bob@example.org"],
    ]
    assert lines[0].split("\t")[0].endswith("Z")
    assert [line.split("\t")[1] for line in mailer(database_url, "logs", "--app", "shop").stdout.splitlines()] == [
        str(second)
    ]
    assert [line.split("\t")[1] for line in mailer(database_url, "logs", "--status", "sent").stdout.splitlines()] == [
        str(third)
    ]
    limited = mailer(database_url, "logs", "--limit", "2").stdout.splitlines()
    assert [line.split("\t")[1] for line in limited] == [str(second), str(third)]


def test_logs_refuses_unknown_apps_and_bad_options(database_url) -> None:
    fails_clearly(mailer(database_url, "logs", "--app", "nobody"), "no app named 'nobody'")
    assert mailer(database_url, "logs", "--limit", "0").returncode == 2
    assert mailer(database_url, "logs", "--status", "lost").returncode == 2


def test_logs_follow_prints_new_jobs_and_changes_until_ctrl_c(database_url, conn) -> None:
    make_key(conn, "billing")
    app = app_id(conn, "billing")
    earlier = make_job(conn, app)
    with subprocess.Popen(
        [sys.executable, "-m", "mailer.cli", "logs", "--follow"],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background of a shell without job control inherits SIGINT ignored, and so
        # would the command, which would then never see its Ctrl-C: give it the terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)  # type: ignore[union-attr]
        reader.start()

        def next_line() -> list[str]:
            try:
                return lines.get(timeout=20).rstrip("\n").split("\t")
            except queue.Empty:
                process.kill()
                pytest.fail(f"no line from mailer logs --follow; stderr: {process.stderr.read()}")  # type: ignore[union-attr]

        try:
            assert next_line()[1:4] == [str(earlier), "billing", "queued"]  # the recent jobs, then the tail
            job = make_job(conn, app)
            assert next_line()[1:] == [str(job), "billing", "queued", "ann@example.org,bob@example.org"]
            actions.cancel(conn, app_id=app, job_id=job)
            assert next_line()[1:4] == [str(job), "billing", "cancelled"]
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()  # else leaving the `with` would wait for it (and its pipes) for ever
                raise
        reader.join(timeout=10)
        assert process.returncode == 0
        assert "Traceback" not in process.stderr.read()  # type: ignore[union-attr]
    assert lines.empty()


def test_logs_follow_filters_by_app_and_status(database_url, conn) -> None:
    make_key(conn, "billing")
    make_key(conn, "shop")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer.cli", "logs", "-f", "--app", "shop", "--status", "cancelled"],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # let it start its tail
        for name in ("billing", "shop"):
            job = make_job(conn, app_id(conn, name))
            actions.cancel(conn, app_id=app_id(conn, name), job_id=job)
        time.sleep(2.5)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert [line.split("\t")[2:4] for line in out.splitlines()] == [["shop", "cancelled"]]
    assert str(job) in out


# --- retry ---------------------------------------------------------------------------------------------


def test_retry_queues_a_failed_job_again_and_wakes_a_sender(database_url, conn) -> None:
    make_key(conn, "billing")
    job = make_job(conn, app_id(conn, "billing"))
    set_status(conn, job, "failed")
    wakeups = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'mailer.send_due_jobs'"
    before = conn.execute(wakeups).fetchone()[0]  # type: ignore[index]
    result = mailer(database_url, "retry", str(job))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"id": str(job), "status": "queued"}
    assert conn.execute("SELECT status FROM jobs WHERE id = %s", (job,)).fetchone() == ("queued",)
    assert conn.execute(wakeups).fetchone()[0] == before + 1  # type: ignore[index]
    events = [row[0] for row in conn.execute("SELECT type FROM job_events WHERE job_id = %s ORDER BY id", (job,))]
    assert events[-1] == "retried"


def test_retry_refuses_jobs_that_are_not_failed_or_unknown(database_url, conn) -> None:
    make_key(conn, "billing")
    job = make_job(conn, app_id(conn, "billing"))
    fails_clearly(mailer(database_url, "retry", str(job)), "only failed jobs can be retried")
    fails_clearly(mailer(database_url, "retry", str(uuid.uuid4())), "no job")


# --- suppressions --------------------------------------------------------------------------------------


def test_suppressions_add_list_remove(database_url, conn) -> None:
    make_key(conn, "billing")
    make_key(conn, "shop")
    added = mailer(database_url, "suppressions", "add", "--app", "billing", "Ann@Example.org", "--reason", "asked")
    assert added.returncode == 0, added.stderr
    assert "added: ann@example.org" in added.stdout
    again = mailer(database_url, "suppressions", "add", "--app", "billing", "ann@example.org")
    assert again.returncode == 0
    assert "already on the list" in again.stdout
    listed = mailer(database_url, "suppressions", "list", "--app", "billing").stdout.splitlines()
    assert [line.split("\t")[:2] + line.split("\t")[3:] for line in listed] == [["ann@example.org", "api", "asked"]]
    assert mailer(database_url, "suppressions", "list", "--app", "shop").stdout == ""  # each app has its own

    removed = mailer(database_url, "suppressions", "remove", "--app", "billing", "ANN@example.org")
    assert removed.returncode == 0, removed.stderr
    assert mailer(database_url, "suppressions", "list", "--app", "billing").stdout == ""
    again_removed = mailer(database_url, "suppressions", "remove", "--app", "billing", "ann@example.org")
    fails_clearly(again_removed, "not on the suppression list")


def test_suppressions_refuse_unknown_apps_and_bad_input(database_url, conn) -> None:
    make_key(conn, "billing")
    fails_clearly(mailer(database_url, "suppressions", "list", "--app", "nobody"), "no app named 'nobody'")
    fails_clearly(mailer(database_url, "suppressions", "add", "--app", "nobody", "a@example.org"), "no app named")
    fails_clearly(mailer(database_url, "suppressions", "add", "--app", "billing", "not-an-address"), "email")
    fails_clearly(
        mailer(database_url, "suppressions", "add", "--app", "billing", "a@example.org", "--reason", "a\nb"), "reason"
    )
    assert mailer(database_url, "suppressions", "add", "a@example.org").returncode == 2  # --app is required
    assert conn.execute("SELECT count(*) FROM suppressions").fetchone() == (0,)


# --- retention -----------------------------------------------------------------------------------------


def test_retention_run_prints_what_it_removed(database_url, conn) -> None:
    from tests.integration import test_retention

    make_key(conn, "billing")
    app = app_id(conn, "billing")
    old = test_retention.make_jobs_made_at(conn, app, test_retention.NOW - datetime.timedelta(days=420), count=3)
    for job in old:
        set_status(conn, job, "sent", days=400)
    set_status(conn, make_job(conn, app), "sent", days=40)

    result = mailer(database_url, "retention", "run", MAILER_RETENTION_BATCH="2")
    assert result.returncode == 0, result.stderr
    assert "bodies purged: 4" in result.stdout
    assert "month partitions dropped: 4" in result.stdout  # the old jobs' month, of jobs and what hangs off them
    assert "budget" not in result.stdout
    assert conn.execute("SELECT count(*), count(body_purged_at) FROM jobs").fetchone() == (1, 1)
    again = mailer(database_url, "retention", "run")
    assert "bodies purged: 0" in again.stdout
    assert "month partitions dropped: 0" in again.stdout


def test_retention_run_honours_the_settings_and_the_budget(database_url, conn) -> None:
    make_key(conn, "billing")
    set_status(conn, make_job(conn, app_id(conn, "billing")), "sent", days=8)
    assert "bodies purged: 0" in mailer(database_url, "retention", "run").stdout
    stopped = mailer(database_url, "retention", "run", "--budget", "0", MAILER_RETENTION_BODY_DAYS="7")
    assert "bodies purged: 0" in stopped.stdout
    assert "stopped at the time budget" in stopped.stdout
    assert "bodies purged: 1" in mailer(database_url, "retention", "run", MAILER_RETENTION_BODY_DAYS="7").stdout
    refused = mailer(database_url, "retention", "run", MAILER_RETENTION_BODY_DAYS="400")
    fails_clearly(refused, "MAILER_RETENTION_BODY_DAYS (400) must not exceed MAILER_RETENTION_DAYS (365)")
