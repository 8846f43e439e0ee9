"""Issue 17 review, webhooks: one app cannot take the others' delivery slots or host rate, and an endpoint
disabled while its status changes are being expanded keeps no pending delivery (migration 0024)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from mailer.services import apps, webhook_delivery
from mailer.store.webhooks import ClaimedDelivery
from tests.integration.webhooks_support import expand, mark_sent, queue, register

PUBLIC = "https://93.184.215.14/hooks"  # never called: these tests stop before any post


def add_endpoints(conn: psycopg.Connection, app_id: int, count: int, url: str) -> None:
    conn.execute(
        "INSERT INTO webhook_endpoints (app_id, url, events, secret) "
        "SELECT %s, %s || '/' || n, '{*}', 'whsec_' || md5(n::text) FROM generate_series(1, %s) AS n",
        (app_id, url, count),
    )


def app_id_of(conn: psycopg.Connection, name: str) -> int:
    return int(conn.execute("SELECT id FROM apps WHERE name = %s", (name,)).fetchone()[0])  # type: ignore[index]


def test_one_app_holds_at_most_its_share_of_the_delivery_slots(client, auth, conn, pool, settings):
    busy = app_id_of(conn, "billing")  # the app of `auth`
    add_endpoints(conn, busy, 10, PUBLIC + "/busy")
    mark_sent(conn, queue(client, auth, *(f"r{n}@example.org" for n in range(8))))  # 80 deliveries due
    quiet, quiet_key = apps.create_app(conn, "quiet")
    add_endpoints(conn, quiet.id, 1, PUBLIC + "/quiet")
    mark_sent(conn, queue(client, {"Authorization": f"Bearer {quiet_key}"}, "q@example.org"), 2**60 + 100)
    expand(conn)

    settings = dataclasses.replace(settings, webhook_concurrency=32)  # 8 per endpoint, 16 per app
    first = Counter(d.app_id for d in webhook_delivery.claim(pool, settings, 50))
    assert first == {busy: 16, quiet.id: 1}  # was 49 of the busy app's: every slot of a worker and more
    assert webhook_delivery.claim(pool, settings, 50) == []  # its 16 in flight (on any worker) are its share
    conn.execute("UPDATE webhook_deliveries SET in_flight_until = NULL, next_attempt_at = now() WHERE id IN "
                 "(SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
                 " WHERE d.in_flight_until IS NOT NULL AND e.app_id = %s LIMIT 5)", (busy,))
    again = Counter(d.app_id for d in webhook_delivery.claim(pool, settings, 50))
    assert again == {busy: 5}  # as its posts end, the app gets slots again

    three = dataclasses.replace(settings, webhook_app_concurrency=3)  # MAILER_WEBHOOK_APP_CONCURRENCY
    conn.execute("UPDATE webhook_deliveries SET in_flight_until = NULL, next_attempt_at = now()")
    assert Counter(d.app_id for d in webhook_delivery.claim(pool, three, 50)) == {busy: 3, quiet.id: 1}


def delivery(app_id: int, url: str, n: int) -> ClaimedDelivery:
    return ClaimedDelivery(id=-n, attempts=0, message_id="msg", type="email.sent", body="{}", endpoint_id=None,  # type: ignore[arg-type]
                           url=url, secret="", previous_secret=None, app_id=app_id)


def test_the_host_rate_limit_is_kept_per_app(pool, settings):
    settings = dataclasses.replace(settings, webhook_host_rate_per_s=1)  # bursts of 1
    shared = "https://hooks.example.com/services/"
    assert webhook_delivery.postponed(pool, delivery(1, shared + "a", 1), settings) is None
    assert webhook_delivery.postponed(pool, delivery(1, shared + "b", 2), settings) is not None  # over its rate
    # another app posting to the same host is not pushed back by the first app's flood
    assert webhook_delivery.postponed(pool, delivery(2, shared + "c", 3), settings) is None
    assert webhook_delivery.postponed(pool, delivery(2, shared + "d", 4), settings) is not None


def pending_of(conn: psycopg.Connection, endpoint_id: str) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT status FROM webhook_deliveries WHERE endpoint_id = %s ORDER BY id", (endpoint_id,))]


def patch_in_thread(client, auth, endpoint_id: str, body: dict) -> tuple[threading.Thread, list]:  # type: ignore[no-untyped-def]
    answers: list = []
    thread = threading.Thread(
        target=lambda: answers.append(client.patch(f"/webhooks/{endpoint_id}", json=body, headers=auth)))
    thread.start()
    return thread, answers


def test_disabling_an_endpoint_during_an_expansion_leaves_no_pending_delivery(client, auth, conn, settings):
    endpoint = register(client, auth, PUBLIC, ["sent"])
    mark_sent(conn, queue(client, auth))
    with psycopg.connect(settings.database_url) as expander:  # a worker's expansion, not committed yet
        assert expander.execute("SELECT webhook_expand_fan_outs(1000)").fetchone() == (1,)
        thread, answers = patch_in_thread(client, auth, endpoint["id"], {"enabled": False})
        time.sleep(0.5)
        assert thread.is_alive()  # the PATCH waits for the expansion (on the app's row)…
        expander.commit()
    thread.join(timeout=30)
    assert answers[0].status_code == 200 and answers[0].json["enabled"] is False
    assert pending_of(conn, endpoint["id"]) == ["disabled"]  # …and then stops the delivery it wrote (was pending)


def test_an_expansion_waits_for_a_disabling_in_progress(client, auth, conn, settings):
    endpoint = register(client, auth, PUBLIC, ["sent"])
    mark_sent(conn, queue(client, auth))
    app_id = app_id_of(conn, "billing")
    with psycopg.connect(settings.database_url) as patcher:  # a PATCH enabled=false, not committed yet
        patcher.execute("SELECT id FROM apps WHERE id = %s FOR NO KEY UPDATE", (app_id,))
        patcher.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE id = %s", (endpoint["id"],))
        written: list[int] = []

        def expand_now() -> None:
            with psycopg.connect(settings.database_url, autocommit=True) as expander:
                written.append(expand(expander))

        thread = threading.Thread(target=expand_now)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()
        patcher.commit()
    thread.join(timeout=30)
    assert written == [0] and pending_of(conn, endpoint["id"]) == []  # it read the endpoint disabled


def test_an_endpoint_disabled_by_a_410_during_an_expansion_keeps_no_pending_delivery(
    client, auth, conn, pool, settings
):
    import datetime as dt

    from mailer.services.webhook_post import Attempt

    endpoint = register(client, auth, PUBLIC, ["sent"])
    mark_sent(conn, queue(client, auth))
    expand(conn)
    [claimed] = webhook_delivery.claim(pool, settings, 10)
    mark_sent(conn, queue(client, auth, "b@example.org"), 2**60 + 100)
    gone = Attempt(attempted_at=dt.datetime.now(dt.UTC), status_code=410, latency_ms=5, error=None)
    with psycopg.connect(settings.database_url) as expander:  # the second change, expanded, not committed
        assert expander.execute("SELECT webhook_expand_fan_outs(1000)").fetchone() == (1,)
        recorded: list = []
        thread = threading.Thread(
            target=lambda: recorded.append(webhook_delivery.record(pool, claimed, gone, settings)))
        thread.start()
        time.sleep(0.5)
        expander.commit()
    thread.join(timeout=30)
    assert recorded == ["disabled"]
    assert pending_of(conn, endpoint["id"]) == ["disabled", "disabled"]  # the second was left pending


# --- name lookups: a tenant whose names hang cannot take the resolver threads of the others -----------------


@pytest.fixture
def hanging_dns(monkeypatch) -> Iterator[threading.Event]:  # type: ignore[no-untyped-def]
    """Names under hang.example never answer (until released); ok.example is a public address."""
    import socket

    from mailer.services import ssrf

    real, release = socket.getaddrinfo, threading.Event()

    def fake(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(host).endswith("hang.example"):
            release.wait(30)
            raise OSError("gave up")
        if str(host).endswith("ok.example"):
            return real("93.184.215.14", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield release
    release.set()
    deadline = time.monotonic() + 10
    while ssrf._resolving and time.monotonic() < deadline:  # the hung lookups end and give their threads back
        time.sleep(0.01)


def hang_lookups(owner: int, count: int) -> None:
    """`count` lookups of `owner` that time out at once and keep their threads (as a name that never answers)."""
    from mailer.services import ssrf

    for n in range(count):
        with pytest.raises(ssrf.Unresolvable):
            ssrf.resolve(f"h{n}.hang.example", 443, 0.05, owner, 16)


def test_an_app_whose_names_hang_keeps_its_share_of_resolvers_and_others_still_register(
    client, auth, conn, hanging_dns, settings
):
    hanging = app_id_of(conn, "billing")
    hang_lookups(hanging, 4)  # a quarter of MAILER_WEBHOOK_DNS_THREADS (16): its share
    refused = client.post("/webhooks", json={"url": "https://a.hang.example/h"}, headers=auth)
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"  # at once, not a 422
    _, other_key = apps.create_app(conn, "other")
    other = client.post("/webhooks", json={"url": "https://hooks.ok.example/h"},
                        headers={"Authorization": f"Bearer {other_key}"})
    assert other.status_code == 201  # was 422 "did not resolve": the four shared threads were all hung


def test_a_delivery_waiting_for_a_resolver_thread_is_put_back_without_an_attempt(
    conn, pool, settings, hanging_dns
):
    app, _ = apps.create_app(conn, "busy")
    add_endpoints(conn, app.id, 1, "https://hooks.ok.example/h")
    mark_sent_for(conn, app.id)
    hang_lookups(app.id, 4)
    [claimed] = webhook_delivery.claim(pool, settings, 10)
    done = webhook_delivery.deliver(pool, claimed, settings)
    assert (done.attempt, done.status) == (None, "pending")
    row = conn.execute("SELECT attempts, in_flight_until, next_attempt_at > now() + interval '3 s' "
                       "FROM webhook_deliveries").fetchone()
    assert row == (0, None, True)  # was attempt 1, `name not resolved`, toward the endpoint's disabling
    assert conn.execute("SELECT count(*) FROM webhook_attempts").fetchone() == (0,)


def mark_sent_for(conn: psycopg.Connection, app_id: int) -> None:
    """A delivery due for the app's endpoints, written as the outbox would."""
    conn.execute("INSERT INTO webhook_messages (app_id, type, body) VALUES (%s, 'email.sent', '{}')", (app_id,))
    conn.execute("INSERT INTO webhook_deliveries (message_id, message_created_at, endpoint_id, next_attempt_at) "
                 "SELECT m.id, m.created_at, e.id, now() FROM webhook_messages m, webhook_endpoints e "
                 "WHERE e.app_id = %s",
                 (app_id,))
