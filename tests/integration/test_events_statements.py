"""Each POST /events chunk is one statement in one transaction: a single-event POST (Mailjet's default) is one
round trip to PostgreSQL, not BEGIN, the insert, the status update (the suppression) and COMMIT (issue 20)."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator

import flask
from psycopg import pq

from mailer.config import Settings
from tests.integration.test_events_api import (
    BIG_ID,
    T0,
    app_with,
    event,
    mark_sent,
    post_events,
    queue,
    recipient,
)


@dataclasses.dataclass
class Trace:
    """What one connection sent to PostgreSQL: each message's type and, for a statement, its text."""

    lines: list[str] = dataclasses.field(default_factory=list)

    @property
    def messages(self) -> list[tuple[str, str]]:
        return [(line.split("\t")[2], line) for line in self.lines if line.startswith("F\t")]

    @property
    def round_trips(self) -> int:
        """Messages that wait for the server's answer: a simple Query, or the Sync that ends an extended one."""
        return sum(kind in ("Query", "Sync") for kind, _ in self.messages)

    @property
    def statements(self) -> list[str]:
        return [text for kind, text in self.messages if kind in ("Query", "Parse")]


@contextlib.contextmanager
def traced(application: flask.Flask) -> Iterator[Trace]:
    """Trace (libpq's PQtrace) every connection of the app's pool, all idle between a test client's requests."""
    pool = application.extensions["mailer.pool"]
    pool.wait()
    trace = Trace()
    with contextlib.ExitStack() as files:
        taken = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
        logs = [files.enter_context(tempfile.TemporaryFile("w+")) for _ in taken]
        for conn, log in zip(taken, logs, strict=True):
            conn.pgconn.trace(log.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            pool.putconn(conn)
        try:
            yield trace
        finally:
            for conn, log in zip(taken, logs, strict=True):
                conn.pgconn.untrace()  # flushes libpq's buffer to the file
                log.seek(0)
                trace.lines += log.read().splitlines()


def test_a_single_event_post_is_one_round_trip_and_one_transaction(settings: Settings, conn, auth) -> None:
    with app_with(settings) as application:
        client = application.test_client()
        job_id = queue(client, auth)
        mark_sent(conn, job_id, BIG_ID)
        with traced(application) as trace:
            response = post_events(client, event("open", at=T0, message_id=BIG_ID))
        assert response.status_code == 200, response.data
        assert response.json == {"received": 1, "new": 1, "matched": 1}
        assert trace.round_trips == 1, trace.messages
        assert not any(text.strip('"').upper() in ("BEGIN", "COMMIT") for text in trace.statements), trace.statements
        assert recipient(client, auth, job_id)["status"] == "opened"  # matched, advanced and committed

        # A suppressing event too: the suppression is part of the one statement.
        with traced(application) as trace:
            response = post_events(client, event("spam", at=T0 + 1, message_id=BIG_ID))
        assert response.json == {"received": 1, "new": 1, "matched": 1}
        assert trace.round_trips == 1, trace.messages
        assert recipient(client, auth, job_id)["status"] == "spam"
        assert conn.execute("SELECT email, reason FROM suppressions").fetchall() == [("ann@example.org", "spam")]

        # A duplicate (Mailjet's retry) is one round trip that stores and changes nothing.
        with traced(application) as trace:
            response = post_events(client, event("open", at=T0, message_id=BIG_ID))
        assert response.json == {"received": 1, "new": 0, "matched": 0}
        assert trace.round_trips == 1, trace.messages


def test_a_grouped_post_is_one_round_trip_per_chunk(settings: Settings, conn, auth) -> None:
    with app_with(settings, events_chunk_size=2) as application:
        client = application.test_client()
        job_id = queue(client, auth)
        mark_sent(conn, job_id, BIG_ID)
        grouped = [event(name, at=T0 + n, message_id=BIG_ID) for n, name in enumerate(("sent", "open", "click"))]
        grouped += [event("open", at=T0 + 10 + n, message_id=BIG_ID + 1 + n) for n in range(2)]  # not ours yet
        with traced(application) as trace:
            response = post_events(client, grouped)
        assert response.json == {"received": 5, "new": 5, "matched": 3}
        assert trace.round_trips == 3, trace.messages  # chunks of 2, 2 and 1, each its own transaction
        assert recipient(client, auth, job_id)["status"] == "clicked"


def test_events_through_pgbouncer_in_transaction_mode(pooled_settings: Settings, conn, auth) -> None:
    """The one statement keeps no session state: past psycopg's prepare threshold, behind PgBouncer."""
    with app_with(pooled_settings) as application:
        client = application.test_client()
        job_id = queue(client, auth)
        mark_sent(conn, job_id, BIG_ID)
        for n, name in enumerate(("sent", "open", "open", "open", "open", "open", "click", "open")):
            response = post_events(client, event(name, at=T0 + n, message_id=BIG_ID))
            assert response.json == {"received": 1, "new": 1, "matched": 1}
        response = post_events(client, [event("open", at=T0 + 100 + n, message_id=BIG_ID) for n in range(3)])
        assert response.json == {"received": 3, "new": 3, "matched": 3}
        assert recipient(client, auth, job_id)["status"] == "clicked"
    assert conn.execute("SELECT count(*) FROM mailjet_events").fetchone()[0] == 11
