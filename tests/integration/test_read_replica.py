"""DATABASE_REPLICA_URL against a real streaming replica: listings read it, everything else the primary; a
replica too far behind, stopped, or not a replica is left for the primary, and used again once it is fit."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import flask
import psycopg
import pytest
from prometheus_client import REGISTRY

from mailer import create_app, pgcluster
from mailer.api import reads
from mailer.config import Settings
from mailer.services import read_replica
from tests import replica_support
from tests.integration.conftest import make_key

OPERATOR = "operator-token-for-replica-tests"
REPLICA_TIMEOUT_S = 2.0
WAIT_S = 30.0  # for a state that the background checks reach within a second or two


def queue(client: flask.testing.FlaskClient, auth: dict[str, str], subject: str) -> str:
    message = {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}], "subject": subject,
               "text": "hi"}
    response = client.post("/queue", json=message, headers=auth)
    assert response.status_code == 202, response.json
    return str(response.json["id"])


def logged_ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.json
    return [item["id"] for item in response.json["items"]]


def router_of(app: flask.Flask) -> read_replica.ReadRouter:
    return app.extensions[reads.EXTENSION]  # type: ignore[no-any-return]


def fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("mailer_replica_fallbacks_total", {"reason": reason}) or 0.0


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout} s")


def wait_fit(router: read_replica.ReadRouter) -> read_replica.Health:
    """Check the replica until it may serve (the first check may find it a moment behind)."""
    return wait_for(lambda: (health := router.check()).reason is None and health, "a replica fit to serve")


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., flask.Flask]]:
    """Apps built from the test's settings with these changes; closed (both pools) at the end."""
    made: list[flask.Flask] = []

    def make(**changes: Any) -> flask.Flask:
        made.append(create_app(dataclasses.replace(settings, operator_token=OPERATOR, **changes)))
        return made[-1]

    yield make
    for app in made:
        router_of(app).close()
        app.extensions["mailer.pool"].close()


@pytest.fixture
def replica_app(make_app: Callable[..., flask.Flask], replica_url: str) -> flask.Flask:
    """The web app with the standby as its replica: a short wait for it, checked five times a second."""
    return make_app(database_replica_url=replica_url, replica_timeout_s=REPLICA_TIMEOUT_S, replica_max_lag_s=30.0,
                    replica_check_interval_s=0.2, replica_retry_s=0.5, db_timeout_s=10.0)


def test_listings_read_the_replica_while_status_and_keys_read_the_primary(
    replica_app, conn, auth, pg_cluster, pg_standby
):
    client = replica_app.test_client()
    first = queue(client, auth, "first")
    replica_support.wait_caught_up(pg_cluster, pg_standby)
    wait_fit(router_of(replica_app))
    page = client.get("/logs", headers=auth)
    assert page.headers[reads.HEADER] == "replica"
    assert logged_ids(page) == [first]

    replica_support.set_replay_paused(pg_standby, True)  # from here on, the replica sees nothing new
    second = queue(client, auth, "second")
    status = client.get(f"/status/{second}", headers=auth)
    assert status.status_code == 200, status.json  # /status reads its own write: the primary
    assert reads.HEADER not in status.headers
    page = client.get("/logs", headers=auth)
    assert page.headers[reads.HEADER] == "replica"
    assert logged_ids(page) == [first]  # the second job is on the primary only
    assert page.json["today"]["created"] == 1
    stats = client.get("/stats", headers=auth)
    assert stats.headers[reads.HEADER] == "replica"
    assert stats.json["days"][-1]["created"] == 1
    # A key made now is not on the replica, yet works: keys are checked on the primary.
    newcomer = {"Authorization": f"Bearer {make_key(conn, 'newcomer')}"}
    fresh = client.get("/logs", headers=newcomer)
    assert (fresh.status_code, fresh.headers[reads.HEADER], logged_ids(fresh)) == (200, "replica", [])

    app_id = int(conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()[0])  # type: ignore[index]
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    jobs_page = client.get(f"/dashboard/apps/{app_id}/jobs", headers=operator)
    assert (jobs_page.status_code, jobs_page.headers[reads.HEADER]) == (200, "replica")
    assert first in jobs_page.text
    assert second not in jobs_page.text
    for path in ("/dashboard", f"/dashboard/apps/{app_id}", f"/dashboard/apps/{app_id}/suppressions"):
        listed = client.get(path, headers=operator)
        assert (listed.status_code, listed.headers.get(reads.HEADER)) == (200, "replica"), path
    one_job = client.get(f"/dashboard/apps/{app_id}/jobs/{second}", headers=operator)
    assert one_job.status_code == 200  # a job's own page, like /status, reads the primary
    assert reads.HEADER not in one_job.headers

    replica_support.set_replay_paused(pg_standby, False)
    replica_support.wait_caught_up(pg_cluster, pg_standby)
    page = client.get("/logs", headers=auth)
    assert page.headers[reads.HEADER] == "replica"
    assert logged_ids(page) == [second, first]


def test_a_replica_too_far_behind_leaves_listings_to_the_primary_until_it_catches_up(
    make_app, replica_url, auth, pg_cluster, pg_standby, caplog
):
    caplog.set_level(logging.INFO, logger=read_replica.__name__)
    app = make_app(database_replica_url=replica_url, replica_max_lag_s=2.0, replica_check_interval_s=0.2)
    router, client = router_of(app), app.test_client()
    wait_fit(router)
    said_before = len(caplog.records)
    replica_support.set_replay_paused(pg_standby, True)
    job = queue(client, auth, "while the replica is paused")
    lagging_before = fallbacks(read_replica.LAGGING)

    health = wait_for(lambda: (seen := router.check()).reason == read_replica.LAGGING and seen, "lagging")
    assert health.lag_s > 2.0
    for _ in range(3):
        assert router.check().reason == read_replica.LAGGING  # still behind, and said once only
    page = client.get("/logs", headers=auth)
    assert page.headers[reads.HEADER] == "primary"
    assert logged_ids(page) == [job]
    assert fallbacks(read_replica.LAGGING) == lagging_before + 1

    replica_support.set_replay_paused(pg_standby, False)
    back = wait_fit(router)
    assert back.lag_s is not None and back.lag_s <= 2.0
    page = client.get("/logs", headers=auth)
    assert page.headers[reads.HEADER] == "replica"
    assert logged_ids(page) == [job]
    said = [record.getMessage() for record in caplog.records[said_before:] if record.name == read_replica.__name__]
    assert sum("behind the primary" in line for line in said) == 1, said  # each change is logged once
    assert sum("read from the replica" in line for line in said) == 1, said


def test_a_judgement_older_than_the_lag_allowed_is_not_trusted(make_app, replica_url, auth, pg_standby):
    app = make_app(database_replica_url=replica_url, replica_max_lag_s=2.0, replica_check_interval_s=0.2)
    router, client = router_of(app), app.test_client()
    wait_fit(router)
    replica_support.set_replay_paused(pg_standby, True)
    job = queue(client, auth, "after a quiet spell")
    time.sleep(2.5)  # no listing, so no check: the last judgement (fit) is now older than the lag allowed
    unknown_before = fallbacks(read_replica.UNKNOWN)
    page = client.get("/logs", headers=auth)
    assert page.headers[reads.HEADER] == "primary"
    assert logged_ids(page) == [job]
    assert fallbacks(read_replica.UNKNOWN) == unknown_before + 1


def test_a_stopped_replica_leaves_listings_to_the_primary_within_its_timeout_and_is_used_again(
    replica_app, auth, pg_cluster, pg_standby
):
    client, router = replica_app.test_client(), router_of(replica_app)
    job = queue(client, auth, "before the outage")
    replica_support.wait_caught_up(pg_cluster, pg_standby)
    wait_fit(router)
    assert client.get("/logs", headers=auth).headers[reads.HEADER] == "replica"
    unavailable_before = fallbacks(read_replica.UNAVAILABLE)

    pg_standby.stop()
    try:
        started = time.monotonic()
        page = client.get("/logs", headers=auth)
        took = time.monotonic() - started
        assert page.headers[reads.HEADER] == "primary"
        assert logged_ids(page) == [job]
        # The replica's wait bounds it (MAILER_DB_TIMEOUT_S is 10 s here), with room for a loaded machine.
        assert took < REPLICA_TIMEOUT_S + 3.0, took
        started = time.monotonic()
        page = client.get("/stats", headers=auth)
        assert page.headers[reads.HEADER] == "primary"
        assert time.monotonic() - started < REPLICA_TIMEOUT_S  # the replica is not waited for again
        assert fallbacks(read_replica.UNAVAILABLE) == unavailable_before + 2
        assert router.check().reason == read_replica.UNAVAILABLE
        assert client.get("/readyz").status_code == 200  # the service is ready without its replica
    finally:
        pg_standby.start()

    # Listings themselves start the checks (every MAILER_REPLICA_RETRY_S while it was down): no call here.
    def on_replica() -> bool:
        answer = client.get("/logs", headers=auth)
        return answer.headers[reads.HEADER] == "replica" and logged_ids(answer) == [job]

    wait_for(on_replica, "listings on the replica again")


def test_a_query_that_fails_on_the_replica_is_answered_by_the_primary(make_app, settings, auth, pg_standby,
                                                                      replica_url):
    # The standby's `postgres` database has none of our tables, as a replica would lack a column that a
    # migration just added until it has replayed it.
    app = make_app(database_replica_url=pg_standby.url("postgres"))
    client, router = app.test_client(), router_of(app)
    job = queue(client, auth, "one")
    wait_fit(router)
    failed_before = fallbacks(read_replica.ERROR)
    page = client.get("/logs", headers=auth)
    assert page.headers[reads.HEADER] == "primary"
    assert logged_ids(page) == [job]
    assert fallbacks(read_replica.ERROR) == failed_before + 1
    assert router.health is not None and router.health.reason == read_replica.ERROR


def test_a_replica_url_naming_a_primary_is_not_read(make_app, settings, auth):
    app = make_app(database_replica_url=settings.database_url)  # not in recovery: it does not follow ours
    client, router = app.test_client(), router_of(app)
    job = queue(client, auth, "one")
    assert router.check().reason == read_replica.NOT_STANDBY
    page = client.get("/logs", headers=auth)
    assert (page.headers[reads.HEADER], logged_ids(page)) == ("primary", [job])


def test_without_a_replica_listings_read_the_primary_and_say_nothing(client, auth):
    job = queue(client, auth, "one")
    page = client.get("/logs", headers=auth)
    assert logged_ids(page) == [job]
    assert reads.HEADER not in page.headers
    assert not router_of(client.application).configured


def test_the_standby_is_a_hot_standby_of_the_primary(pg_standby: pgcluster.Cluster, replica_url: str):
    with psycopg.connect(replica_url, autocommit=True) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            replica.execute("INSERT INTO apps (name) VALUES ('nope')")
