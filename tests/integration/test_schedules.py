"""/schedules and the scheduler: exactly one job per occurrence, DST-safe, missed occurrences handled."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import itertools
import time

import psycopg
import pytest

from mailer.services import scheduling
from tests.integration.conftest import make_key
from tests.integration.sending_support import message, run_sender

UTC = dt.UTC


def local_tomorrow_9() -> str:
    tomorrow = dt.datetime.now(UTC).date() + dt.timedelta(days=1)
    return f"{tomorrow.isoformat()}T09:00:00"


def schedule_body(**overrides: object) -> dict:
    return {"message": message("ann@example.org"), "start_at": local_tomorrow_9(), "timezone": "Europe/Berlin",
            "frequency": "DAILY", "interval": 1, "count": 10} | overrides


def create(client, auth, **overrides) -> dict:  # type: ignore[no-untyped-def]
    response = client.post("/schedules", json=schedule_body(**overrides), headers=auth)
    assert response.status_code == 201, response.json
    return response.json


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def tick(database_url: str, now: dt.datetime) -> scheduling.Ticked:
    with psycopg.connect(database_url) as conn:
        return scheduling.tick(conn, now=now, batch_size=50)


def test_create_answers_next_occurrence_and_five_upcoming_in_utc(client, auth) -> None:
    created = create(client, auth)
    assert created["status"] == "active"
    assert created["jobs"] == []
    assert len(created["upcoming"]) == 5
    assert created["next_occurrence"] == created["upcoming"][0]
    assert all(value.endswith("Z") for value in created["upcoming"])
    first = parse(created["upcoming"][0])
    assert first.astimezone(dt.timezone(dt.timedelta(hours=1))).hour in (9, 10)  # 09:00 Berlin: 07:00/08:00 UTC
    gaps = {parse(b) - parse(a) for a, b in zip(created["upcoming"], created["upcoming"][1:], strict=False)}
    assert gaps <= {dt.timedelta(days=1), dt.timedelta(hours=23), dt.timedelta(hours=25)}


def test_fixed_offset_zone(client, auth) -> None:
    created = create(client, auth, timezone="UTC+2")
    assert parse(created["next_occurrence"]).hour == 7


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"frequency": "HOURLY"}, "frequency"),
        ({"interval": 0}, "interval"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"until": "2020-01-01T09:00:00", "count": None}, "until"),
        ({"count": 3, "until": "2099-01-01T09:00:00"}, "count"),
        ({"start_at": "next tuesday"}, "start_at"),
        ({"message": message("ann@example.org") | {"send_at": "2099-01-01T00:00:00Z"}}, "message"),
        ({"message": {"subject": "x"}}, "message"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_schedules_are_422_naming_the_field(client, auth, conn, overrides, field) -> None:
    response = client.post("/schedules", json=schedule_body(**overrides), headers=auth)
    assert response.status_code == 422
    assert field in response.json["error"]["details"]
    assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)


def test_a_rule_with_no_future_occurrence_is_422(client, auth) -> None:
    response = client.post("/schedules", json=schedule_body(start_at="2020-01-01T09:00:00", count=2), headers=auth)
    assert response.status_code == 422
    assert "start_at" in response.json["error"]["details"]


def test_get_list_and_isolation(client, auth, conn) -> None:
    first = create(client, auth)
    second = create(client, auth, frequency="WEEKLY")
    listed = client.get("/schedules?limit=1", headers=auth).json
    assert [item["id"] for item in listed["items"]] == [second["id"]]
    rest = client.get(f"/schedules?limit=1&cursor={listed['next_cursor']}", headers=auth).json
    assert [item["id"] for item in rest["items"]] == [first["id"]]
    assert rest["next_cursor"] is None
    assert client.get(f"/schedules/{first['id']}", headers=auth).json["id"] == first["id"]
    other = {"Authorization": f"Bearer {make_key(conn, 'other')}"}
    assert client.get(f"/schedules/{first['id']}", headers=other).status_code == 404
    assert client.delete(f"/schedules/{first['id']}", headers=other).status_code == 404
    assert client.get("/schedules", headers=other).json["items"] == []
    assert client.get("/schedules?cursor=garbage", headers=auth).status_code == 422


def test_patch_recomputes_upcoming(client, auth) -> None:
    created = create(client, auth)
    patched = client.patch(f"/schedules/{created['id']}", json={"frequency": "WEEKLY"}, headers=auth)
    assert patched.status_code == 200
    upcoming = [parse(value) for value in patched.json["upcoming"]]
    assert all(b - a >= dt.timedelta(days=6) for a, b in itertools.pairwise(upcoming))
    moved = client.patch(f"/schedules/{created['id']}", json={"timezone": "UTC"}, headers=auth).json
    assert parse(moved["next_occurrence"]).hour == 9
    assert client.patch(f"/schedules/{created['id']}", json={"interval": 0}, headers=auth).status_code == 422


def test_scheduler_makes_exactly_one_job_per_occurrence(client, auth, database_url, conn) -> None:
    created = create(client, auth, count=3)
    first = parse(created["next_occurrence"])

    assert tick(database_url, first - dt.timedelta(minutes=5)).jobs == 0  # not yet within the lead
    assert tick(database_url, first - dt.timedelta(seconds=30)).jobs == 1
    assert tick(database_url, first - dt.timedelta(seconds=20)).jobs == 0  # the same occurrence again: no
    for day in (1, 2):
        assert tick(database_url, first + dt.timedelta(days=day) - dt.timedelta(seconds=10)).jobs == 1
    assert tick(database_url, first + dt.timedelta(days=5)).jobs == 0

    story = client.get(f"/schedules/{created['id']}", headers=auth).json
    assert story["status"] == "done"
    assert story["next_occurrence"] is None
    assert story["upcoming"] == []
    assert len(story["jobs"]) == 3
    job = client.get(f"/status/{story['jobs'][0]}", headers=auth).json
    assert job["schedule_id"] == created["id"]
    assert job["status"] == "scheduled"
    assert parse(job["send_at"]) == first
    assert conn.execute("SELECT count(*) FROM schedules_active").fetchone() == (0,)  # out of the hot table
    assert conn.execute("SELECT count(*) FROM schedules_done").fetchone() == (1,)


def test_two_schedulers_at_once_make_one_job_per_occurrence(client, auth, database_url, conn) -> None:
    ids = [create(client, auth, count=2)["id"] for _ in range(20)]
    first = min(parse(client.get(f"/schedules/{i}", headers=auth).json["next_occurrence"]) for i in ids)
    moments = [first + dt.timedelta(days=day) for day in (0, 0, 1, 1)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda now: tick(database_url, now), moments))

    assert sum(result.jobs for result in results) <= 40
    tick(database_url, first + dt.timedelta(days=1))  # whatever a skipped-lock pass left
    rows = conn.execute("SELECT schedule_id, count(*) FROM jobs GROUP BY schedule_id").fetchall()
    assert len(rows) == 20
    assert {count for _, count in rows} == {2}


def test_after_downtime_only_the_latest_missed_occurrence_is_sent(client, auth, database_url, conn) -> None:
    created = create(client, auth, count=None)
    first = parse(created["next_occurrence"])

    result = tick(database_url, first + dt.timedelta(days=6, hours=1))  # down for six days

    assert result.jobs == 1
    assert result.skipped == 6
    job_id = client.get(f"/schedules/{created['id']}", headers=auth).json["jobs"][0]
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "queued"  # sent now, not at its (past) time
    after = client.get(f"/schedules/{created['id']}", headers=auth).json
    assert parse(after["next_occurrence"]) > first + dt.timedelta(days=6, hours=1)


def test_done_stops_sends_and_cancels_waiting_jobs(client, auth, database_url) -> None:
    created = create(client, auth)
    tick(database_url, parse(created["next_occurrence"]) - dt.timedelta(seconds=30))
    job_id = client.get(f"/schedules/{created['id']}", headers=auth).json["jobs"][0]

    done = client.post(f"/schedules/{created['id']}/done", headers=auth)

    assert done.status_code == 200
    assert done.json["status"] == "done"
    assert client.get(f"/status/{job_id}", headers=auth).json["status"] == "cancelled"
    assert tick(database_url, parse(created["next_occurrence"]) + dt.timedelta(days=3)).jobs == 0
    assert client.post(f"/schedules/{created['id']}/done", headers=auth).status_code == 200  # idempotent
    assert client.patch(f"/schedules/{created['id']}", json={"count": 2}, headers=auth).status_code == 409


def test_delete_keeps_the_jobs_it_produced(client, auth, database_url) -> None:
    created = create(client, auth)
    tick(database_url, parse(created["next_occurrence"]) - dt.timedelta(seconds=30))
    job_id = client.get(f"/schedules/{created['id']}", headers=auth).json["jobs"][0]
    assert client.delete(f"/schedules/{created['id']}", headers=auth).status_code == 204
    assert client.get(f"/schedules/{created['id']}", headers=auth).status_code == 404
    assert client.delete(f"/schedules/{created['id']}", headers=auth).status_code == 404
    job = client.get(f"/status/{job_id}", headers=auth).json
    assert job["schedule_id"] == created["id"]
    assert job["status"] == "cancelled"


def test_send_at_is_not_sent_early_and_is_sent_right_after(client, auth, send_settings, simulator) -> None:
    send_at = dt.datetime.now(UTC) + dt.timedelta(seconds=1.5)
    job_id = client.post("/queue", json=message("ann@example.org") | {"send_at": send_at.isoformat()}, headers=auth)
    assert job_id.json["status"] == "scheduled"
    assert run_sender(send_settings).claimed == 0
    time.sleep(max(0.0, (send_at - dt.datetime.now(UTC)).total_seconds()) + 0.1)
    assert run_sender(send_settings).sent == 1


def test_a_scheduled_job_can_be_moved_and_a_queued_one_cannot(client, auth, conn) -> None:
    later = (dt.datetime.now(UTC) + dt.timedelta(days=2)).isoformat()
    job_id = client.post("/queue", json=message("a@example.org") | {"send_at": later}, headers=auth).json["id"]
    even_later = dt.datetime.now(UTC) + dt.timedelta(days=3)

    moved = client.patch(f"/queue/{job_id}", json={"send_at": even_later.isoformat()}, headers=auth)

    assert moved.status_code == 200
    assert moved.json == {"id": job_id, "status": "scheduled"}
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert abs(parse(story["send_at"]) - even_later) < dt.timedelta(seconds=1)
    assert story["events"][-1]["type"] == "rescheduled"
    wakeup = conn.execute("SELECT max(scheduled_at) FROM procrastinate_jobs").fetchone()
    assert wakeup is not None and abs(wakeup[0] - even_later) < dt.timedelta(seconds=1)
    now_queued = client.patch(f"/queue/{job_id}", json={"send_at": "2020-01-01T00:00:00Z"}, headers=auth)
    assert now_queued.json["status"] == "queued"
    again = client.patch(f"/queue/{job_id}", json={"send_at": later}, headers=auth)
    assert again.status_code == 409
    assert client.patch(f"/queue/{job_id}", json={"send_at": "tomorrow"}, headers=auth).status_code == 422
