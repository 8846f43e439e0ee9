"""Recording Mailjet events reads the rows of its batch by key, however many events and recipients the month
holds and whether or not its partitions were analyzed yet (issue 19: a new month's are not)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from mailer import store
from mailer.mailjet import events as mailjet_events
from mailer.services import queueing, tracking

RECIPIENTS = 1000
FIRST_MESSAGE_ID = 2**58
PLANS_BEFORE_GENERIC = 5  # PostgreSQL's plan cache makes this many custom plans before it may keep a generic one


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


def _explain_analyze(conn: psycopg.Connection, run: Callable[[], object]) -> list[dict[str, Any]]:
    """The plan nodes, with actual rows, of every statement `run` has PostgreSQL execute, the statements inside
    the functions it calls included (auto_explain, its plans sent as notices); in a transaction rolled back."""
    plans: list[dict[str, Any]] = []

    def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
        text = diagnostic.message_primary or ""
        if "plan:" in text:
            plans.append(json.loads(text.split("plan:", 1)[1])["Plan"])

    conn.execute("LOAD 'auto_explain'")
    conn.add_notice_handler(keep)
    try:
        with conn.transaction(force_rollback=True):
            for setting, value in (("log_min_duration", "0"), ("log_analyze", "on"), ("log_nested_statements", "on"),
                                   ("log_format", "json"), ("log_level", "notice")):
                conn.execute(f"SET LOCAL auto_explain.{setting} = {value}")  # type: ignore[arg-type]  # constants
            run()
    finally:
        conn.remove_notice_handler(keep)
    return [node for plan in plans for node in _nodes(plan)]


def _growing(node: dict[str, Any]) -> bool:
    """A node reading a table that grows with the history (not a lookup table like recipient_statuses)."""
    return str(node.get("Relation Name", "")).startswith(("mailjet_events", "recipients"))


@pytest.mark.parametrize("session", ["new", "analyzed"])
@pytest.mark.parametrize("dated", [True, False])
def test_a_batch_of_events_scans_no_month_of_events_or_recipients(
    conn: psycopg.Connection, database_url: str, history: list[tuple[int, str, str]], dated: bool, session: str
) -> None:
    # Dated: times of the last minutes. Undated: a year old, so stamped with their arrival and deduplicated by
    # fingerprint among the last 28 days' events. Every statement of the recording counts: the insert, the
    # status update and what triggers run.
    # The function's statements are planned once per session and kept (PL/pgSQL's plan cache, which keeps a
    # generic plan after five custom ones), so the plans checked are a session's real ones: a session started
    # with the month as it is (never analyzed), or the one that recorded the history since the month was
    # empty, once autovacuum analyzed the month (an ANALYZE invalidates the plans that read the table).
    at = int(dt.datetime.now(dt.UTC).timestamp()) - (60 if dated else 365 * 86_400)
    batch = [_event(at, "click", *recipient) for recipient in history[:100]]
    assert all(event.dated is dated for event in batch)
    with contextlib.ExitStack() as stack:
        if session == "new":
            conn = stack.enter_context(psycopg.connect(database_url, autocommit=True))
        else:
            conn.execute("ANALYZE recipients, mailjet_events")
        for _ in range(PLANS_BEFORE_GENERIC + 1):
            with conn.transaction(force_rollback=True):
                tracking.record_events(conn, batch)

        nodes = _explain_analyze(conn, lambda: tracking.record_events(conn, batch))

        sequential = {node["Relation Name"]: _rows_seen(node) for node in nodes
                      if node["Node Type"] == "Seq Scan" and _growing(node) and _rows_seen(node)}
        assert not sequential, sequential  # a scan of a month grows with it: every batch slower than the one before
        insert = next(node for node in nodes
                      if node.get("Operation") == "Insert" and node.get("Relation Name") == "mailjet_events")
        assert insert["Actual Rows"] == 100  # all new: none taken for a duplicate
        assert conn.execute("SELECT count(*) FROM mailjet_events").fetchone()[0] == 3 * RECIPIENTS  # rolled back


def test_looking_for_suppressing_events_reads_none_of_the_others(
    conn: psycopg.Connection, history: list[tuple[int, str, str]]
) -> None:
    ids = [row[0] for row in conn.execute("SELECT id FROM mailjet_events ORDER BY id DESC LIMIT 100")]

    nodes = _explain_analyze(conn, lambda: store.suppress_from_events(conn, event_ids=ids))

    read = {node["Relation Name"]: _rows_seen(node) for node in nodes
            if node.get("Relation Name", "").startswith("mailjet_events") and _rows_seen(node)}
    assert not read, read
    assert any(node.get("Relation Name") == "suppressions" for node in nodes)  # the function's statement is seen
    assert store.suppress_from_events(conn, event_ids=ids) == []


def test_plans_kept_while_the_month_was_empty_read_it_by_key_once_it_fills(
    conn: psycopg.Connection, database_url: str
) -> None:
    # Months are made ahead, empty: a session that recorded events early in a month keeps the plans it made then
    # (0034), and rows added since do not make them over until an ANALYZE (0036: no sequential scan, no JIT).
    app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('a', 'k', '') RETURNING id").fetchone()[0]

    def sent(count: int) -> list[tuple[int, str, str]]:
        jobs = [queueing.NewJob(message={"from_": {"email": "a@example.com"}, "to": [{"email": f"{n}@example.com"}]})
                for n in range(count)]
        queueing.insert(conn, app, jobs, 50)
        return conn.execute("UPDATE recipients SET message_id = %s + id WHERE message_id IS NULL "
                            "RETURNING message_id, job_id::text, email", (FIRST_MESSAGE_ID,)).fetchall()

    early = sent(1)
    now = int(dt.datetime.now(dt.UTC).timestamp())
    with psycopg.connect(database_url, autocommit=True) as session:
        for n in range(PLANS_BEFORE_GENERIC + 1):
            with session.transaction(force_rollback=True):
                tracking.record_events(session, [_event(now - n, "open", *early[0])])
        later = sent(RECIPIENTS)  # the month fills; nothing analyzes it
        batch = [_event(now, "open", *recipient) for recipient in later[:100]]
        nodes = _explain_analyze(session, lambda: tracking.record_events(session, batch))
    sequential = {node["Relation Name"]: _rows_seen(node) for node in nodes
                  if node["Node Type"] == "Seq Scan" and _growing(node) and _rows_seen(node)}
    assert not sequential, sequential
    settings = conn.execute("SELECT proconfig FROM pg_proc WHERE proname = 'mailer_record_events'").fetchone()[0]
    assert "jit=off" in settings, settings
