"""`mailer apps revoke`: one transaction stops the app's key, waiting jobs, schedules and webhooks."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
import pytest

from mailer.domain import errors
from mailer.services import apps
from tests.integration.conftest import make_key
from tests.integration.sending_support import message
from tests.integration.test_cli import mailer
from tests.integration.test_schedules import schedule_body
from tests.integration.webhooks_support import expand, mark_sent, queue, register

URL = "https://93.184.215.14/"  # never called: nothing here delivers


def in_an_hour() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()


def populate(client, conn: psycopg.Connection, auth: dict[str, str]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """An app with every kind of thing revoking touches; their ids."""
    made: dict[str, Any] = {}
    made["queued"] = queue(client, auth)
    response = client.post("/queue", json=message("bob@example.org") | {"send_at": in_an_hour()}, headers=auth)
    assert response.status_code == 202 and response.json["status"] == "scheduled"
    made["scheduled"] = response.json["id"]
    made["sending"] = queue(client, auth)
    conn.execute("UPDATE jobs SET status = 'sending', claimed_at = now() WHERE id = %s", (made["sending"],))
    made["sent"] = queue(client, auth)
    conn.execute("UPDATE jobs SET status = 'sent' WHERE id = %s", (made["sent"],))
    made["endpoint"] = register(client, auth, URL + "on")["id"]
    made["off_endpoint"] = register(client, auth, URL + "off")["id"]
    assert client.patch(f"/webhooks/{made['off_endpoint']}", json={"enabled": False}, headers=auth).status_code == 200
    mark_sent(conn, made["sent"])
    expand(conn)  # a pending delivery to the enabled endpoint
    response = client.post("/schedules", json=schedule_body(), headers=auth)
    assert response.status_code == 201, response.json
    made["schedule"] = response.json["id"]
    return made


def job_status(conn: psycopg.Connection, job_id: str) -> str:
    row = conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def trail(conn: psycopg.Connection, job_id: str) -> list[tuple[str, Any]]:
    return [tuple(row) for row in conn.execute("SELECT type, detail FROM job_events WHERE job_id = %s ORDER BY id",
                                               (job_id,))]


def schedule_state(conn: psycopg.Connection, schedule_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT tableoid::regclass::text, state, next_occurrence IS NULL, finished_at IS NOT NULL FROM schedules"
        " WHERE id = %s", (schedule_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def endpoint_state(conn: psycopg.Connection, endpoint_id: str) -> tuple[Any, ...]:
    row = conn.execute("SELECT disabled_at IS NOT NULL, disabled_reason FROM webhook_endpoints WHERE id = %s",
                       (endpoint_id,)).fetchone()
    assert row is not None
    return tuple(row)


def delivery_statuses(conn: psycopg.Connection, endpoint_id: str) -> list[str]:
    return [row[0] for row in conn.execute("SELECT status FROM webhook_deliveries WHERE endpoint_id = %s",
                                           (endpoint_id,))]


def cancelled_count(conn: psycopg.Connection, app_name: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(c.count), 0) FROM job_counts c JOIN apps a ON a.id = c.app_id"
        " WHERE a.name = %s AND c.kind = 'cancelled'", (app_name,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_revoke_stops_everything_of_the_app_and_nothing_of_another(client, auth, api_key, conn) -> None:
    billing = populate(client, conn, auth)
    other_key = make_key(conn, "shop")
    other_auth = {"Authorization": f"Bearer {other_key}"}
    shop = populate(client, conn, other_auth)
    assert delivery_statuses(conn, billing["endpoint"]) == ["pending"]

    revoked = apps.revoke_app(conn, "billing")

    assert (revoked.app.name, revoked.jobs_cancelled, revoked.schedules_done, revoked.webhooks_disabled) == (
        "billing", 2, 1, 1
    )
    assert revoked.app.revoked_at is not None
    # the key
    with pytest.raises(errors.Unauthorized):
        apps.authenticate(conn, api_key)
    assert client.post("/queue", json=message("ann@example.org"), headers=auth).status_code == 401
    # the waiting jobs: cancelled, with the audit event app_revoked; the others as they were
    for kind in ("queued", "scheduled"):
        assert job_status(conn, billing[kind]) == "cancelled"
        assert trail(conn, billing[kind])[-1] == ("app_revoked", {"by": "operator", "status": "cancelled"})
    assert job_status(conn, billing["sending"]) == "sending"
    assert job_status(conn, billing["sent"]) == "sent"
    assert cancelled_count(conn, "billing") == 2  # /stats and /logs' today counters, as a cancel keeps them
    # the schedule: done, in the done partition
    assert schedule_state(conn, billing["schedule"]) == ("schedules_done", "done", True, True)
    # the endpoints: disabled (one already was, and keeps its own reason); pending deliveries stop
    assert endpoint_state(conn, billing["endpoint"]) == (True, "app_revoked")
    assert endpoint_state(conn, billing["off_endpoint"]) == (True, "disabled through the API")
    assert delivery_statuses(conn, billing["endpoint"]) == ["disabled"]
    # the operator still reads the revoked app's jobs
    story = json.loads(mailer(conn.info.dsn, "status", billing["scheduled"]).stdout)
    assert story["status"] == "cancelled"
    assert story["events"][-1]["type"] == "app_revoked"

    # another app: untouched
    assert apps.authenticate(conn, other_key) > 0
    assert job_status(conn, shop["queued"]) == "queued"
    assert job_status(conn, shop["scheduled"]) == "scheduled"
    assert [event for event, _ in trail(conn, shop["queued"])] == ["queued"]
    assert cancelled_count(conn, "shop") == 0
    assert schedule_state(conn, shop["schedule"]) == ("schedules_active", "active", False, False)
    assert endpoint_state(conn, shop["endpoint"]) == (False, None)
    assert delivery_statuses(conn, shop["endpoint"]) == ["pending"]
    assert client.post("/queue", json=message("ann@example.org"), headers=other_auth).status_code == 202


def test_revoke_is_one_transaction(client, auth, api_key, conn) -> None:
    billing = populate(client, conn, auth)
    # The last step fails: everything before it must roll back with it.
    conn.execute("""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'no endpoint may change'; END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON webhook_endpoints FOR EACH ROW EXECUTE FUNCTION refuse();
    """)
    with pytest.raises(psycopg.errors.RaiseException):
        apps.revoke_app(conn, "billing")
    assert apps.authenticate(conn, api_key) > 0
    assert job_status(conn, billing["queued"]) == "queued"
    assert job_status(conn, billing["scheduled"]) == "scheduled"
    assert schedule_state(conn, billing["schedule"]) == ("schedules_active", "active", False, False)
    assert cancelled_count(conn, "billing") == 0

    conn.execute("DROP TRIGGER refuse ON webhook_endpoints")
    assert apps.revoke_app(conn, "billing").jobs_cancelled == 2


def test_revoking_an_unknown_or_revoked_app_is_a_clear_error(conn, api_key) -> None:
    with pytest.raises(errors.NotFound, match="no app named 'nobody'"):
        apps.revoke_app(conn, "nobody")
    apps.revoke_app(conn, "billing")
    with pytest.raises(errors.Conflict, match="revoked already"):
        apps.revoke_app(conn, "billing")


def test_a_schedule_revoked_meanwhile_makes_no_job(client, auth, database_url, conn) -> None:
    from tests.integration.test_schedules import parse, tick

    created = client.post("/schedules", json=schedule_body(), headers=auth).json
    apps.revoke_app(conn, "billing")
    ticked = tick(database_url, parse(created["next_occurrence"]))
    assert ticked.jobs == 0
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
