"""`mailer apps revoke` against a running worker: nothing of the app that was still waiting reaches Mailjet."""

from __future__ import annotations

import datetime as dt
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
import requests

from mailer.services import apps
from tests.e2e.conftest import ROOT, System, running_system, wait_until

pytestmark = pytest.mark.e2e

BLOCKER_S = 12.0  # how long the simulator holds the send call that keeps the one sender busy


@pytest.fixture
def system(database_url: str, tmp_path: pathlib.Path) -> Iterator[System]:
    # One task at a time: while a send call is in flight, jobs queued meanwhile stay queued. Mailjet's timeout
    # is longer than the held call, so the sender waits for it instead of giving up and moving on.
    with running_system(
        database_url, tmp_path, MAILER_WORKER_CONCURRENCY="1", MAILER_MAILJET_TIMEOUT_S="30"
    ) as running:
        yield running


def post(system: System, auth: dict[str, str], **extra: object) -> requests.Response:
    body = {"from": {"email": "shop@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Hi",
            "text": "hello"} | extra
    return requests.post(f"{system.web_url}/queue", json=body, headers=auth, timeout=10)


def queue(system: System, auth: dict[str, str], **extra: object) -> str:
    response = post(system, auth, **extra)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def statuses(conn: psycopg.Connection, ids: list[str]) -> dict[str, str]:
    return {str(job_id): status for job_id, status in conn.execute(
        "SELECT id, status FROM jobs WHERE id = ANY(%s::uuid[])", (ids,))}


def sent_ids(system: System) -> set[str]:
    return set(requests.get(f"{system.simulator_url}/_sim/sends", timeout=5).json()["by_custom_id"])


def simulator_latency(system: System, seconds: float) -> None:
    requests.post(f"{system.simulator_url}/_sim/config", json={"latency_s": seconds}, timeout=5).raise_for_status()


def test_revoke_while_the_worker_runs_sends_nothing_more(system: System, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        revoke_while_the_worker_runs(system, conn)


def revoke_while_the_worker_runs(system: System, conn: psycopg.Connection) -> None:
    _, other_key = apps.create_app(conn, "other")
    other = {"Authorization": f"Bearer {other_key}"}
    start = dt.datetime.now(dt.UTC)

    # An active schedule whose first occurrence the scheduler turns into a scheduled job at once (60 s ahead).
    first = (start + dt.timedelta(seconds=25)).replace(microsecond=0)
    response = requests.post(f"{system.web_url}/schedules", headers=system.auth, timeout=10, json={
        "message": {"from": {"email": "shop@example.com"}, "to": [{"email": "rem@example.org"}], "subject": "R",
                    "text": "reminder"},
        "start_at": first.replace(tzinfo=None).isoformat(), "timezone": "UTC", "frequency": "DAILY", "count": 3,
    })
    assert response.status_code == 201, response.text
    schedule_id = response.json()["id"]
    webhook = requests.post(f"{system.web_url}/webhooks", headers=system.auth, timeout=10,
                            json={"url": "https://93.184.215.14/hooks", "events": ["*"]})
    assert webhook.status_code == 201, webhook.text
    from_schedule = wait_until(lambda: [str(row[0]) for row in conn.execute(
        "SELECT id FROM jobs WHERE schedule_id = %s", (schedule_id,))], 20, message="the schedule's first job")
    # Scheduled jobs a few seconds ahead (time enough to occupy the sender before they are due).
    send_at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8)).isoformat()
    scheduled = [queue(system, system.auth, send_at=send_at) for _ in range(2)]

    # Another app's send call keeps the sender busy; meanwhile the app's new jobs wait, queued.
    simulator_latency(system, BLOCKER_S)
    blocker = queue(system, other)
    wait_until(lambda: statuses(conn, [blocker])[blocker] == "sending", 10, message="the other app's call in flight")
    queued = [queue(system, system.auth) for _ in range(3)]
    waiting = from_schedule + scheduled + queued
    assert set(statuses(conn, waiting).values()) <= {"queued", "scheduled"}, "the box was too slow"

    revoked = subprocess.run(
        [sys.executable, "-m", "mailer.cli", "apps", "revoke", "e2e"],
        env=system.env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert statuses(conn, [blocker])[blocker] == "sending", "the box was too slow: the held call ended first"
    lines = revoked.stdout.splitlines()
    assert lines[1].startswith("jobs cancelled: 6 ")
    assert lines[2:] == ["schedules done: 1", "webhook endpoints disabled: 1"]

    # The key is refused at once, whatever the process remembered.
    assert post(system, system.auth).status_code == 401
    assert requests.get(f"{system.web_url}/status/{queued[0]}", headers=system.auth, timeout=10).status_code == 401

    # Let everything that could have been sent be sent: the sender is free again, every send_at and the
    # schedule's occurrence are past, and a later job of the other app has gone out.
    simulator_latency(system, 0)
    wait_until(lambda: dt.datetime.now(dt.UTC) > first + dt.timedelta(seconds=2), 40, interval=0.5,
               message="the schedule's occurrence")
    probe = queue(system, other)
    wait_until(lambda: probe in sent_ids(system), 30, message="the other app's later job sent")
    assert blocker in sent_ids(system)  # a call in flight finishes as it is
    assert not set(waiting) & sent_ids(system)
    assert set(statuses(conn, waiting).values()) == {"cancelled"}
    for job_id in waiting:
        last = conn.execute("SELECT type FROM job_events WHERE job_id = %s ORDER BY id DESC LIMIT 1", (job_id,))
        assert last.fetchone() == ("app_revoked",)
    assert conn.execute("SELECT state FROM schedules WHERE id = %s", (schedule_id,)).fetchone() == ("done",)
    assert conn.execute("SELECT count(*) FROM jobs WHERE schedule_id = %s", (schedule_id,)).fetchone() == (1,)
