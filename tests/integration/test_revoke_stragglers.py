"""Revoked apps leave nothing running: apps revoked by an older release (migration 0023), schedules the
scheduler finds of a revoked app, and requests that waited on a revoke's lock."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import psycopg

from mailer.store.queries import SQL_DIR
from tests.integration.conftest import make_key
from tests.integration.test_app_revoke import (
    URL,
    delivery_statuses,
    endpoint_state,
    job_status,
    populate,
    schedule_state,
    trail,
)
from tests.integration.test_schedules import parse, schedule_body, tick
from tests.integration.webhooks_support import queue, register

MIGRATION = SQL_DIR / "migrations" / "0023_stop_revoked_apps.sql"
WAIT_S = 20.0  # a loaded 2-core box takes well under this to start a request and reach its lock


def revoke_as_an_older_release_did(conn: psycopg.Connection, name: str) -> None:
    conn.execute("UPDATE apps SET revoked_at = now() WHERE name = %s", (name,))


def test_migration_stops_what_apps_revoked_before_it_had_left(client, auth, conn) -> None:  # type: ignore[no-untyped-def]
    billing = populate(client, conn, auth)
    verified = queue(client, auth, "eve@example.org")
    conn.execute("UPDATE jobs SET verify_before_send = true WHERE id = %s", (verified,))
    shop = populate(client, conn, {"Authorization": f"Bearer {make_key(conn, 'shop')}"})
    revoke_as_an_older_release_did(conn, "billing")

    conn.execute(MIGRATION.read_text())  # type: ignore[arg-type]  # our migration file

    for kind in ("queued", "scheduled"):
        assert job_status(conn, billing[kind]) == "cancelled"
        assert trail(conn, billing[kind])[-1] == ("app_revoked", {"by": "operator", "status": "cancelled"})
    # a job to verify before it is sent is left to the send claim
    assert job_status(conn, verified) == "queued"
    assert [event for event, _ in trail(conn, verified)] == ["queued"]
    assert job_status(conn, billing["sending"]) == "sending"
    assert schedule_state(conn, billing["schedule"]) == ("schedules_done", "done", True, True)
    assert endpoint_state(conn, billing["endpoint"]) == (True, "app_revoked")
    assert endpoint_state(conn, billing["off_endpoint"]) == (True, "disabled through the API")
    assert delivery_statuses(conn, billing["endpoint"]) == ["disabled"]
    # an active app: untouched
    assert job_status(conn, shop["queued"]) == "queued"
    assert job_status(conn, shop["scheduled"]) == "scheduled"
    assert schedule_state(conn, shop["schedule"]) == ("schedules_active", "active", False, False)
    assert endpoint_state(conn, shop["endpoint"]) == (False, None)
    assert delivery_statuses(conn, shop["endpoint"]) == ["pending"]


def test_the_scheduler_finishes_a_revoked_apps_schedule_instead_of_firing_it(  # type: ignore[no-untyped-def]
    client, auth, database_url, conn
) -> None:
    created = client.post("/schedules", json=schedule_body(), headers=auth).json
    other = client.post("/schedules", json=schedule_body(),
                        headers={"Authorization": f"Bearer {make_key(conn, 'shop')}"}).json
    revoke_as_an_older_release_did(conn, "billing")

    ticked = tick(database_url, parse(created["next_occurrence"]))

    assert (ticked.jobs, ticked.finished) == (1, 1)  # the other app's occurrence, and the revoked schedule
    assert schedule_state(conn, created["id"]) == ("schedules_done", "done", True, True)
    assert schedule_state(conn, other["id"]) == ("schedules_active", "active", False, False)
    rows = conn.execute("SELECT a.name FROM jobs j JOIN apps a ON a.id = j.app_id").fetchall()
    assert rows == [("shop",)]


def _while_a_revoke_holds_the_app(database_url: str, request: Callable[[], Any]) -> Any:
    """Run `request` while another transaction revokes billing as `mailer apps revoke` does (its app row
    locked, then its schedules and endpoints stopped), and commit that revoke once the request waits."""
    with psycopg.connect(database_url) as revoker, concurrent.futures.ThreadPoolExecutor(1) as pool:
        app_id = revoker.execute("SELECT id FROM apps WHERE name = 'billing' FOR NO KEY UPDATE").fetchone()[0]  # type: ignore[index]
        revoker.execute("UPDATE apps SET revoked_at = now() WHERE id = %s", (app_id,))
        revoker.execute("UPDATE schedules SET state = 'done', next_occurrence = NULL, finished_at = now()"
                        " WHERE app_id = %s AND state = 'active'", (app_id,))
        revoker.execute("UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = 'app_revoked'"
                        " WHERE app_id = %s AND disabled_at IS NULL", (app_id,))
        pending = pool.submit(request)
        deadline = time.monotonic() + WAIT_S
        with psycopg.connect(database_url, autocommit=True) as watcher:
            while not pending.done() and time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchone()
                if waiting and waiting[0] > 0:
                    break
                time.sleep(0.02)
        revoker.commit()
        return pending.result(timeout=WAIT_S)


def test_a_schedule_created_as_the_app_is_revoked_is_refused(client, auth, database_url, conn) -> None:  # type: ignore[no-untyped-def]
    response = _while_a_revoke_holds_the_app(
        database_url, lambda: client.post("/schedules", json=schedule_body(), headers=auth)
    )
    assert response.status_code == 401, response.json
    assert response.json["error"]["code"] == "unauthorized"
    assert conn.execute("SELECT count(*) FROM schedules WHERE state = 'active'").fetchone() == (0,)


def test_a_webhook_registered_as_the_app_is_revoked_is_refused(client, auth, database_url, conn) -> None:  # type: ignore[no-untyped-def]
    response = _while_a_revoke_holds_the_app(
        database_url, lambda: client.post("/webhooks", json={"url": URL + "late", "events": ["*"]}, headers=auth)
    )
    assert response.status_code == 401, response.json
    assert response.json["error"]["code"] == "unauthorized"
    assert conn.execute("SELECT count(*) FROM webhook_endpoints WHERE disabled_at IS NULL").fetchone() == (0,)


def test_a_webhook_enabled_as_the_app_is_revoked_stays_disabled(client, auth, database_url, conn) -> None:  # type: ignore[no-untyped-def]
    created = register(client, auth, URL + "off")
    assert client.patch(f"/webhooks/{created['id']}", json={"enabled": False}, headers=auth).status_code == 200
    response = _while_a_revoke_holds_the_app(
        database_url, lambda: client.patch(f"/webhooks/{created['id']}", json={"enabled": True}, headers=auth)
    )
    assert response.status_code == 401, response.json
    assert conn.execute("SELECT count(*) FROM webhook_endpoints WHERE disabled_at IS NULL").fetchone() == (0,)
