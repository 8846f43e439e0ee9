"""GET /activity served by a real streaming replica: the standby's snapshots hold the feed back exactly as the
primary's do (a transaction still open on the primary is still running in the standby's view), so a walk on
the replica skips nothing, also across a pause of its replay."""

from __future__ import annotations

import time

import psycopg

from mailer.api import reads
from tests import replica_support
from tests.integration.conftest import app_with
from tests.integration.test_activity_api import walk
from tests.integration.webhooks_support import mark_sent, queue

WAIT_S = 30.0  # for the router's first check to find the standby fit


def _replica_client(app):  # type: ignore[no-untyped-def]
    router = app.extensions[reads.EXTENSION]
    deadline = time.monotonic() + WAIT_S
    while router.check().reason is not None:
        assert time.monotonic() < deadline, "the replica never became fit to serve"
        time.sleep(0.1)
    return app.test_client()


def test_a_walk_on_the_replica_waits_for_a_writer_open_on_the_primary(
    settings, replica_url, auth, conn, database_url, pg_cluster, pg_standby
):
    with app_with(settings, database_replica_url=replica_url, replica_timeout_s=2.0, replica_max_lag_s=30.0,
                  replica_check_interval_s=0.2, replica_retry_s=0.5) as app:
        client = _replica_client(app)
        early, late = queue(client, auth, "early@example.org"), queue(client, auth, "late@example.org")
        with psycopg.connect(database_url) as held:
            mark_sent(held, early)  # the lower id and xid, committed last
            mark_sent(conn, late)
            replica_support.wait_caught_up(pg_cluster, pg_standby)
            response = client.get("/activity", headers=auth)
            assert response.headers[reads.HEADER] == "replica"
            assert response.json["items"] == []  # late's change is on the standby, behind the open writer
            cursor = response.json["next_cursor"]
            replica_support.set_replay_paused(pg_standby, True)
            held.commit()
        items, cursor = walk(client, auth, cursor)
        assert items == []  # the commit is not replayed yet
        replica_support.set_replay_paused(pg_standby, False)
        replica_support.wait_caught_up(pg_cluster, pg_standby)
        page = client.get("/activity", query_string={"cursor": cursor}, headers=auth)
        assert page.headers[reads.HEADER] == "replica"
        items = page.json["items"] + walk(client, auth, page.json["next_cursor"])[0]
        assert [item["data"]["recipient"] for item in items] == ["early@example.org", "late@example.org"]
