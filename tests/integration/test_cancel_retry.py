"""DELETE /queue/{id} and POST /queue/{id}/retry."""

from __future__ import annotations

import uuid

import psycopg

from tests.integration.conftest import make_key
from tests.integration.sending_support import message, run_sender, script


def queue(client, auth, **extra) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/queue", json=message("ann@example.org") | extra, headers=auth)
    assert response.status_code == 202
    return response.json["id"]


def test_cancel_a_queued_job_and_it_is_never_sent(client, auth, send_settings, simulator) -> None:
    job_id = queue(client, auth)
    response = client.delete(f"/queue/{job_id}", headers=auth)
    assert response.status_code == 200
    assert response.json == {"id": job_id, "status": "cancelled"}
    assert run_sender(send_settings).claimed == 0
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "cancelled"
    assert story["events"][-1]["type"] == "cancelled"


def test_cancel_a_scheduled_job(client, auth) -> None:
    job_id = queue(client, auth, send_at="2099-01-01T09:00:00+01:00")
    assert client.delete(f"/queue/{job_id}", headers=auth).json["status"] == "cancelled"


def test_cancel_after_sending_is_409_and_twice_is_409(client, auth, send_settings, simulator) -> None:
    sent = queue(client, auth)
    run_sender(send_settings)
    response = client.delete(f"/queue/{sent}", headers=auth)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "conflict"
    assert response.json["error"]["details"] == {"status": "sent"}
    cancelled = queue(client, auth)
    client.delete(f"/queue/{cancelled}", headers=auth)
    assert client.delete(f"/queue/{cancelled}", headers=auth).status_code == 409


def test_cancel_and_retry_of_unknown_or_foreign_jobs_are_404(client, auth, conn: psycopg.Connection) -> None:
    job_id = queue(client, auth)
    other = {"Authorization": f"Bearer {make_key(conn, 'other-app')}"}
    for path in (f"/queue/{job_id}", f"/queue/{uuid.uuid4()}", "/queue/not-a-uuid"):
        assert client.delete(path, headers=other if path.endswith(job_id) else auth).status_code == 404
    assert client.post(f"/queue/{job_id}/retry", headers=other).status_code == 404
    assert client.post(f"/queue/{uuid.uuid4()}/retry", headers=auth).status_code == 404
    assert client.get(f"/status/{job_id}", headers=auth).json["status"] == "queued"  # untouched


def test_retry_a_failed_job_keeps_its_id_and_history(client, auth, send_settings, simulator, conn) -> None:
    import dataclasses

    settings = dataclasses.replace(send_settings, send_max_attempts=1)
    job_id = queue(client, auth)
    script(simulator, "429")
    run_sender(settings)
    assert client.get(f"/status/{job_id}", headers=auth).json["status"] == "failed"

    response = client.post(f"/queue/{job_id}/retry", headers=auth)
    assert response.status_code == 202
    assert response.json == {"id": job_id, "status": "queued"}
    wakeups = conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'mailer.send_due_jobs'"
    ).fetchone()
    assert wakeups == (2,)  # the original one and the retry's
    assert run_sender(settings).sent == 1
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "sent"
    assert story["recipients"][0]["status"] == "sent"
    types = [event["type"] for event in story["events"]]
    assert types == ["queued", "sending", "failed", "retried", "sending", "sent"]
    assert story["events"][3]["detail"]["previous_attempts"] == 1


def test_retry_of_a_job_that_is_not_failed_is_409(client, auth) -> None:
    job_id = queue(client, auth)
    response = client.post(f"/queue/{job_id}/retry", headers=auth)
    assert response.status_code == 409
    assert response.json["error"]["details"] == {"status": "queued"}


def test_a_cancel_waiting_on_a_job_another_cancel_ends_is_409_not_a_database_error(client, auth, database_url) -> None:
    # Ending a job moves its row from jobs_live to jobs_done (0028). A statement waiting for that row's lock then
    # fails with a serialization error instead of reading the new row; the action is tried again and sees it.
    import threading

    job_id = queue(client, auth)
    with psycopg.connect(database_url) as holder:
        holder.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (job_id,))  # ended, not committed
        answer: dict = {}
        waiting = threading.Thread(target=lambda: answer.update(r=client.delete(f"/queue/{job_id}", headers=auth)))
        waiting.start()
        waiting.join(timeout=1)
        assert waiting.is_alive()  # it waits for the row's lock
        holder.commit()
    waiting.join(timeout=10)
    assert answer["r"].status_code == 409, answer["r"].json
    assert answer["r"].json["error"]["details"] == {"status": "cancelled"}


def test_a_retry_waiting_on_a_job_another_retry_moves_is_409(client, auth, database_url, conn) -> None:
    import threading

    job_id = queue(client, auth)
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", (job_id,))
    with psycopg.connect(database_url) as holder:
        holder.execute("UPDATE jobs SET status = 'queued' WHERE id = %s", (job_id,))  # back to jobs_live
        answer: dict = {}
        waiting = threading.Thread(
            target=lambda: answer.update(r=client.post(f"/queue/{job_id}/retry", headers=auth)))
        waiting.start()
        waiting.join(timeout=1)
        assert waiting.is_alive()
        holder.commit()
    waiting.join(timeout=10)
    assert answer["r"].status_code == 409, answer["r"].json
    assert answer["r"].json["error"]["details"] == {"status": "queued"}
