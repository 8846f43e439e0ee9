"""Fixtures for tests that drive the Flask app against a real database."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import flask
import psycopg
import psycopg_pool
import pytest

from mailer import create_app, db
from mailer.config import Settings
from mailer.services import apps


@pytest.fixture
def app(settings: Settings) -> Iterator[flask.Flask]:
    """The web app, with its own pool on the test database."""
    application = create_app(settings)
    yield application
    application.extensions["mailer.pool"].close()


@pytest.fixture
def pool(settings: Settings) -> Iterator[psycopg_pool.ConnectionPool]:
    """A worker's kind of pool on the test database (the webhook tests run the worker's code with it)."""
    created = db.create_pool(settings, name="test-worker", max_size=20)
    created.wait()
    yield created
    created.close()


@pytest.fixture
def client(app: flask.Flask) -> flask.testing.FlaskClient:
    return app.test_client()


@contextlib.contextmanager
def app_with(settings: Settings, **changes: object) -> Iterator[flask.Flask]:
    """An app of its own whose settings differ by `changes` (its pool closed on exit)."""
    application = create_app(dataclasses.replace(settings, **changes))
    try:
        yield application
    finally:
        application.extensions["mailer.pool"].close()


@pytest.fixture
def app_id(conn: psycopg.Connection) -> int:
    """The id of an app named billing, with its key made."""
    make_key(conn, "billing")
    row = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()
    assert row is not None
    return int(row[0])


def make_key(conn: psycopg.Connection, name: str) -> str:
    """Register an app and return its API key."""
    _, key = apps.create_app(conn, name)
    return key


@pytest.fixture
def api_key(conn: psycopg.Connection) -> str:
    return make_key(conn, "billing")


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def simulator() -> Iterator[str]:
    """The Mailjet simulator in a thread (no event callbacks); its base URL."""
    from mailer import pgcluster
    from mailer.mailjet import simulator as sim

    port = pgcluster.free_port()
    server, thread = sim.start_in_thread("127.0.0.1", port, sim.SimulatorConfig(api_key="key", api_secret="secret"))
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def send_settings(settings: Settings, simulator: str) -> Settings:
    """Settings whose Mailjet is the simulator."""
    import dataclasses

    return dataclasses.replace(settings, mailjet_api_url=simulator, mailjet_timeout_s=2.0)


@pytest.fixture(autouse=True)
def sender_liveness(request: pytest.FixtureRequest) -> Iterator[object]:
    """A test that has a database runs as a worker process does: with a sender identity (services/liveness.py),
    which the sender claims with. (No takeover loop: the tests run the takeover check themselves.)"""
    if "settings" not in request.fixturenames:
        yield None
        return
    from mailer.services import liveness

    with liveness.running(request.getfixturevalue("settings")) as sender:
        yield sender
