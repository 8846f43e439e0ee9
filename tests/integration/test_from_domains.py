"""`mailer apps create --from-domain`: an app limited to some domains sends `from` them only (422 otherwise)."""

from __future__ import annotations

import psycopg
import pytest
from prometheus_client import REGISTRY

from mailer import store
from mailer.api import fast_message
from mailer.services import apps
from tests.integration.test_queue_api import assert_error, message, post
from tests.integration.test_schedules import schedule_body


@pytest.fixture
def limited(conn: psycopg.Connection) -> dict[str, str]:
    """The auth header of an app that may send from example.com and bücher.de only."""
    _, key = apps.create_app(conn, "limited", ["example.com", "Bücher.de"])
    return {"Authorization": f"Bearer {key}"}


def sender(email: str, **extra: object) -> dict:
    return message(**extra) | {"from": {"email": email, "name": "Sender"}}


def jobs(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM jobs").fetchone()
    assert row is not None
    return int(row[0])


def refused() -> float:
    return REGISTRY.get_sample_value("mailer_from_refused_total") or 0.0


@pytest.mark.parametrize("email", ["billing@example.com", "Billing@EXAMPLE.Com", "a@bücher.de", "a@xn--bcher-kva.de"])
def test_a_listed_domain_is_accepted_in_any_case(client, limited, email) -> None:
    response = post(client, sender(email), limited)
    assert response.status_code == 202, response.json


@pytest.mark.parametrize("extra", [{}, {"headers": {"X-Order": "1"}}], ids=["fast path", "schema path"])
@pytest.mark.parametrize("email", ["billing@example.net", "billing@mail.example.com", "billing@example.com.evil.io"])
def test_another_domain_is_422_naming_from(client, conn, limited, email, extra) -> None:
    body = sender(email, **extra)
    assert (fast_message.load(body) is not None) == (not extra)  # both loaders are exercised
    before = refused()
    details = assert_error(post(client, body, limited), 422, "validation_error")
    domain = email.rpartition("@")[2]
    allowed = "(example.com, xn--bcher-kva.de)"
    assert details == {"from": [f"the domain {domain} is not one this app may send from {allowed}"]}
    assert jobs(conn) == 0
    assert refused() == before + 1


def test_a_recalled_key_is_checked_against_the_domains_as_they_are_now(client, conn, limited, monkeypatch) -> None:
    lookups: list[str] = []
    lookup = store.get_app_by_key_id
    monkeypatch.setattr(store, "get_app_by_key_id", lambda conn, *, key_id: lookups.append(key_id) or lookup(
        conn, key_id=key_id))
    assert post(client, sender("a@example.com"), limited).status_code == 202
    apps.set_from_domains(conn, "limited", ["example.org"])
    details = assert_error(post(client, sender("a@example.com"), limited), 422, "validation_error")
    assert list(details) == ["from"]
    assert post(client, sender("a@example.org"), limited).status_code == 202
    assert len(lookups) == 1  # the key was recalled: the insert statement itself read the new domains
    apps.set_from_domains(conn, "limited", [])
    assert post(client, sender("a@anything.example"), limited).status_code == 202


def test_with_an_idempotency_key_too(client, conn, limited) -> None:
    details = assert_error(post(client, sender("a@example.net"), limited, **{"Idempotency-Key": "k"}), 422,
                           "validation_error")
    assert list(details) == ["from"]
    assert post(client, sender("a@example.com"), limited, **{"Idempotency-Key": "k"}).status_code == 202


@pytest.mark.parametrize("extra", [{}, {"headers": {"X-Order": "1"}}], ids=["fast path", "schema path"])
def test_a_batch_names_each_refused_message_by_index(client, conn, limited, extra) -> None:
    batch = [sender(f"a{i}@{'example.net' if i in (2, 4) else 'example.com'}", **extra) for i in range(6)]
    details = assert_error(post(client, {"messages": batch}, limited), 422, "validation_error")
    refusal = "the domain example.net is not one this app may send from (example.com, xn--bcher-kva.de)"
    assert details == {"messages": {"2": {"from": [refusal]}, "4": {"from": [refusal]}}}
    assert jobs(conn) == 0  # validated whole: nothing stored
    ok = post(client, {"messages": [batch[0], batch[1]]}, limited)
    assert ok.status_code == 202
    assert len(ok.json["jobs"]) == 2


def test_an_app_without_domains_sends_from_any(client, auth) -> None:
    assert post(client, sender("x@anything.example"), auth).status_code == 202
    assert post(client, {"messages": [sender("x@a.example"), sender("y@b.example")]}, auth).status_code == 202


def test_a_revoked_key_is_still_401_not_422(client, conn, limited) -> None:
    assert post(client, sender("a@example.com"), limited).status_code == 202  # recalled from now on
    apps.revoke_app(conn, "limited")
    assert_error(post(client, sender("a@example.net"), limited), 401, "unauthorized")


def test_schedules_check_the_from_of_a_new_message(client, conn, limited) -> None:
    bad = schedule_body(message=sender("a@example.net"))
    details = assert_error(client.post("/schedules", json=bad, headers=limited), 422, "validation_error")
    assert details == {"message": {"from": [
        "the domain example.net is not one this app may send from (example.com, xn--bcher-kva.de)"
    ]}}
    assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)
    created = client.post("/schedules", json=schedule_body(message=sender("a@example.com")), headers=limited)
    assert created.status_code == 201, created.json
    path = f"/schedules/{created.json['id']}"
    details = assert_error(client.patch(path, json={"message": sender("a@sub.example.com")}, headers=limited), 422,
                           "validation_error")
    assert list(details) == ["message"] and list(details["message"]) == ["from"]
    assert client.get(path, headers=limited).json["message"]["from"]["email"] == "a@example.com"
    changed = client.patch(path, json={"message": sender("b@bücher.de"), "interval": 2}, headers=limited)
    assert changed.status_code == 200, changed.json
    assert changed.json["message"]["from"]["email"] == "b@bücher.de"
    assert client.patch(path, json={"interval": 3}, headers=limited).status_code == 200
