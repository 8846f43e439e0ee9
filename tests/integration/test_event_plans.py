"""Recording Mailjet events reads the rows of its batch by key, however many events and recipients the month
holds and whether or not its partitions were analyzed yet (issue 19: a new month's are not)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from mailer import store
from mailer.mailjet import events as mailjet_events
from mailer.services import queueing, tracking
from mailer.store import _run
from mailer.store.queries import query

RECIPIENTS = 1000
FIRST_MESSAGE_ID = 2**58


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def _rows_seen(node: dict[str, Any]) -> int:
    """The rows a scan returned or read and dropped, over all its loops."""
    return (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)) * node.get("Actual Loops", 1)


def _event(raw_time: int, name: str, message_id: int, job_id: str, email: str) -> mailjet_events.MailjetEvent:
    return mailjet_events.to_event({"event": name, "time": raw_time, "MessageID": message_id, "CustomID": job_id,
                                    "email": email})


@pytest.fixture
def history(conn: psycopg.Connection) -> list[tuple[int, str, str]]:
    """A month of sent messages with three events each (sent, open, click), never analyzed."""
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]
    jobs = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
            for n in range(RECIPIENTS)]
    queueing.insert(conn, app, jobs, 50)
    recipients = conn.execute(
        "UPDATE recipients SET message_id = %s + id RETURNING message_id, job_id::text, email", (FIRST_MESSAGE_ID,)
    ).fetchall()
    now = int(dt.datetime.now(dt.UTC).timestamp())
    events = [_event(now - 3600 + n, name, *recipient) for n, recipient in enumerate(recipients)
              for name in ("sent", "open", "click")]
    for first in range(0, len(events), 100):
        tracking.record_events(conn, events[first:first + 100])
    return recipients


def _explain_analyze(conn: psycopg.Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    with conn.transaction(force_rollback=True):
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query(name),  # type: ignore[operator]
                            params).fetchone()[0][0]["Plan"]
    return _nodes(plan)


@pytest.mark.parametrize("dated", [True, False])
def test_a_batch_of_events_scans_no_month_of_events_or_recipients(
    conn: psycopg.Connection, history: list[tuple[int, str, str]], dated: bool
) -> None:
    # Dated: times of the last minutes. Undated: a year old, so stamped with their arrival and deduplicated by
    # fingerprint among the last 28 days' events.
    at = int(dt.datetime.now(dt.UTC).timestamp()) - (60 if dated else 365 * 86_400)
    batch = [_event(at, "click", *recipient) for recipient in history[:100]]
    assert all(event.dated is dated for event in batch)

    nodes = _explain_analyze(conn, "insert_mailjet_events", events=_run.jsonb(tracking.event_rows(batch)))

    sequential = {node["Relation Name"]: _rows_seen(node) for node in nodes
                  if node["Node Type"] == "Seq Scan" and _rows_seen(node)}
    assert not sequential, sequential  # a scan of a month grows with it: every batch slower than the one before
    insert = next(node for node in nodes if node.get("Operation") == "Insert")
    assert insert["Actual Rows"] == 100  # all new: none taken for a duplicate
    assert conn.execute("SELECT count(*) FROM mailjet_events").fetchone()[0] == 3 * RECIPIENTS  # rolled back


def test_looking_for_suppressing_events_reads_none_of_the_others(
    conn: psycopg.Connection, history: list[tuple[int, str, str]]
) -> None:
    ids = [row[0] for row in conn.execute("SELECT id FROM mailjet_events ORDER BY id DESC LIMIT 100")]

    nodes = _explain_analyze(conn, "suppress_from_events", event_ids=ids)

    read = {node["Relation Name"]: _rows_seen(node) for node in nodes
            if node.get("Relation Name", "").startswith("mailjet_events") and _rows_seen(node)}
    assert not read, read
    assert store.suppress_from_events(conn, event_ids=ids) == []
