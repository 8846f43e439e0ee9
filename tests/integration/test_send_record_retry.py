"""A claim's results that the database failed to record are recorded again on a fresh connection (they may hold
Mailjet's MessageIDs); the sender gives up its identity only when the retries run out (MAILER_DB_TIMEOUT_S)."""

from __future__ import annotations

import dataclasses
import time

import psycopg
import pytest

from mailer.domain import errors
from mailer.services import liveness, send_recording
from mailer.store import senders as senders_store
from tests.integration.sending_support import message, run_sender, sends


def queue(client, auth, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    messages = [message(f"r{i}@example.org") for i in range(count)]
    return [job["id"] for job in client.post("/queue", json={"messages": messages}, headers=auth).json["jobs"]]


def test_results_recorded_after_one_database_failure_keep_their_message_ids(
    client, auth, send_settings, simulator, conn, monkeypatch
) -> None:
    ids = queue(client, auth, 3)
    sender = liveness.current()
    first = sender.sender_id
    real, calls = send_recording.record, []

    def fails_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise psycopg.OperationalError("the database is away")
        return real(*args, **kwargs)

    monkeypatch.setattr(send_recording, "record", fails_once)
    outcome = run_sender(send_settings)

    assert (len(calls), outcome.sent) == (2, 3)
    assert calls[1] - calls[0] >= send_recording.RECORD_RETRY_FIRST_S * 0.9
    assert sends(simulator)["calls"] == 1
    stored = dict(conn.execute("SELECT job_id::text, message_id::text FROM recipients").fetchall())
    accepted = {m["custom_id"]: m["recipients"][0]["message_id"] for m in sends(simulator)["messages"]}
    assert stored == accepted and set(stored) == set(ids)
    assert sender.healthy(first) and sender.sender_id == first  # not given up
    assert conn.execute("SELECT count(*) FROM job_events WHERE type = 'sent'").fetchone() == (3,)


def test_a_retry_after_a_takeover_records_nothing(client, auth, send_settings, simulator, conn, monkeypatch) -> None:
    # The fence makes the retry safe: jobs taken over while the database was failing are left to the takeover.
    queue(client, auth, 2)
    sender = liveness.current()
    first = sender.sender_id
    real, calls = send_recording.record, []

    def taken_over_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            conn.execute("UPDATE senders SET retired_at = now(), retired_because = 'hung' WHERE id = %s", [first])
            assert len(senders_store.take_over_lost_claims(conn)) == 2
            raise psycopg.OperationalError("the database is away")
        return real(*args, **kwargs)

    monkeypatch.setattr(send_recording, "record", taken_over_meanwhile)
    outcome = run_sender(send_settings)

    assert (len(calls), outcome.sent) == (2, 0)
    assert conn.execute("SELECT status, verify_before_send FROM jobs").fetchall() == [("queued", True)] * 2
    assert conn.execute("SELECT count(*) FROM recipients WHERE message_id IS NOT NULL").fetchone() == (0,)


def test_a_database_failing_for_longer_than_the_bound_gives_up_the_sender(
    client, auth, send_settings, simulator, monkeypatch
) -> None:
    queue(client, auth, 2)
    settings = dataclasses.replace(send_settings, db_timeout_s=1.5)
    sender = liveness.current()
    first = sender.sender_id
    calls = []

    def database_gone(*args: object) -> None:
        calls.append(time.monotonic())
        raise psycopg.OperationalError("the database is away")

    monkeypatch.setattr(send_recording, "record", database_gone)
    started = time.monotonic()
    with pytest.raises(errors.DatabaseUnavailable):
        run_sender(settings)

    assert len(calls) >= 2  # tried again before giving up
    assert time.monotonic() - started < settings.db_timeout_s + 5  # and no longer than the bound (plus margin)
    assert not sender.healthy(first)
