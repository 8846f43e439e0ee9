"""The whole loop with real processes: POST /queue → worker → Mailjet simulator → /events → /status."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from tests.e2e.conftest import BOTH_ROUTES, System, wait_until

pytestmark = pytest.mark.e2e


def queue(system: System, to: str, **extra: object) -> str:
    response = requests.post(
        f"{system.web_url}/queue",
        json={"from": {"email": "shop@example.com"}, "to": [{"email": to}], "subject": "Order", "text": "Thanks"}
        | extra,
        headers=system.auth,
        timeout=5,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def status(system: System, job_id: str) -> dict:
    response = requests.get(f"{system.web_url}/status/{job_id}", headers=system.auth, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


@BOTH_ROUTES
def test_a_job_goes_queued_sent_delivered_opened(system: System) -> None:
    job_id = queue(system, "ann@example.org", metadata={"order_id": 1001})

    story = wait_until(
        lambda: (s := status(system, job_id)) and s["recipients"][0]["status"] == "opened" and s,
        timeout=20, message="recipient opened",
    )
    assert story["status"] == "sent"
    assert story["metadata"] == {"order_id": 1001}
    recipient = story["recipients"][0]
    assert int(recipient["message_id"]) > 2**53
    assert [event["type"] for event in recipient["events"]] == ["delivered", "opened"]
    assert [event["type"] for event in story["events"]] == ["queued", "sending", "sent"]
    sends = requests.get(f"{system.simulator_url}/_sim/sends", timeout=5).json()
    assert sends["by_custom_id"] == {job_id: 1}


@BOTH_ROUTES
def test_a_rejected_address_fails_the_job_with_mailjets_error(system: System) -> None:
    good = queue(system, "bob@example.org")
    bad = queue(system, "eve@mailbox.invalid")

    failed = wait_until(lambda: (s := status(system, bad)) and s["status"] == "failed" and s, 20, message="failed")
    assert "mj-0013" in failed["last_error"]
    assert failed["recipients"][0]["status"] == "failed"
    assert wait_until(lambda: status(system, good)["status"] == "sent", 20, message="good job sent")


@BOTH_ROUTES
def test_a_batch_is_sent_in_few_mailjet_calls(system: System) -> None:
    messages = [
        {"from": {"email": "news@example.com"}, "to": [{"email": f"reader{i}@example.org"}], "subject": "News",
         "text": "Hello", "priority": "bulk"}
        for i in range(120)
    ]
    response = requests.post(f"{system.web_url}/queue", json={"messages": messages}, headers=system.auth, timeout=10)
    assert response.status_code == 202
    ids = [job["id"] for job in response.json()["jobs"]]

    sends = wait_until(
        lambda: (s := requests.get(f"{system.simulator_url}/_sim/sends", timeout=5).json())
        and len(s["by_custom_id"]) == 120 and s,
        timeout=30, message="120 messages accepted by the simulator",
    )
    assert all(sends["by_custom_id"][job_id] == 1 for job_id in ids)
    assert sends["calls"] <= 6  # batches of up to 50 messages per Mailjet call


@BOTH_ROUTES
def test_a_schedule_sends_its_occurrence_once(system: System) -> None:
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).replace(tzinfo=None, microsecond=0)
    message = {"from": {"email": "shop@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Reminder",
               "text": "Your appointment"}
    created = requests.post(
        f"{system.web_url}/schedules", headers=system.auth, timeout=5,
        json={"message": message, "start_at": start.isoformat(), "timezone": "UTC", "frequency": "DAILY", "count": 1},
    )
    assert created.status_code == 201, created.text
    schedule_url = f"{system.web_url}/schedules/{created.json()['id']}"

    jobs = wait_until(lambda: requests.get(schedule_url, headers=system.auth, timeout=5).json()["jobs"], 20,
                      0.2, "the occurrence's job")
    assert wait_until(lambda: status(system, jobs[0])["status"] == "sent", 20, message="the occurrence sent")
    assert status(system, jobs[0])["schedule_id"] == created.json()["id"]
    sends = requests.get(f"{system.simulator_url}/_sim/sends", timeout=5).json()
    assert sends["by_custom_id"] == {jobs[0]: 1}
