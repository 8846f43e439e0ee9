"""GET /stats' recipients per milestone (migrations 0042, 0045, 0046): counted once per recipient from every event
applied to it and every status change, by every writer (POST /events, test mode, the sender), on the UTC day of the
change, with rates over delivered."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import pathlib
import re
import uuid

import psycopg
import pytest

from mailer.api import responses
from mailer.services import apps
from tests.integration.sending_support import message, run_sender
from tests.integration.test_logs_api import _not_at_midnight  # noqa: F401  # autouse: no test across 00:00 UTC
from tests.integration.webhooks_support import BIG_ID, mark_sent, post_events, queue

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
KINDS = ("delivered", "opened", "clicked", "bounced", "blocked", "spam", "unsubscribed")
DOMAIN = "simulator.mailer.test"
OPERATOR = "operator-token-for-tests-0123"


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def stats(client, auth) -> dict:  # type: ignore[no-untyped-def]
    """Today's /stats (a one-day range): the day, and the totals."""
    response = client.get(f"/stats?since={today()}&until={today()}", headers=auth)
    assert response.status_code == 200, response.json
    [day] = response.json["days"]
    return {"day": day, "totals": response.json["totals"]}


def engagement(day: dict) -> dict[str, int]:
    return {kind: day[kind] for kind in KINDS}


def counts(**given: int) -> dict[str, int]:
    return {kind: given.get(kind, 0) for kind in KINDS}


def event(name: str, message_id: int, **extra: object) -> dict:
    return {"event": name, "time": int(dt.datetime.now(dt.UTC).timestamp()) - 60, "MessageID": message_id,
            "email": "ann@example.org", **extra}


def sent_job(client, auth, conn: psycopg.Connection, message_id: int) -> str:  # type: ignore[no-untyped-def]
    job_id = queue(client, auth)
    mark_sent(conn, job_id, message_id)
    return job_id


def test_the_mailjet_sample_payload_counts_every_milestone_of_each_recipient(client, auth, conn) -> None:
    raw = json.loads((FIXTURES / "webhook_v2.json").read_text())
    for message_id in sorted({item["MessageID"] for item in raw}):
        sent_job(client, auth, conn, message_id)
    post_events(client, raw)

    answer = stats(client, auth)
    # alice: sent, open, click and unsub in one grouped POST move her straight to `unsubscribed`, and count
    # delivered, opened, clicked and unsubscribed once each; bob: spam (delivered, spam); a hard bounce; a block
    # (never sent: not delivered).
    expected = counts(delivered=2, opened=1, clicked=1, bounced=1, blocked=1, spam=1, unsubscribed=1)
    assert engagement(answer["day"]) == expected
    assert answer["day"]["rates"] == {"opened": 0.5, "clicked": 0.5, "bounced": 0.5, "blocked": 0.5, "spam": 0.5,
                                      "unsubscribed": 0.5}
    assert engagement(answer["totals"]) == engagement(answer["day"])
    assert answer["totals"]["created"] == 4
    alice = conn.execute("SELECT r.status, r.milestones FROM recipients r"
                         " WHERE r.message_id = %s", (raw[0]["MessageID"],)).fetchone()
    assert alice == ("unsubscribed", 1 | 2 | 4 | 64)

    post_events(client, raw)  # Mailjet's retry of the same batch: nothing new
    assert engagement(stats(client, auth)["day"]) == expected


def test_an_open_after_spam_counts_opened_and_writes_no_activity(client, auth, conn) -> None:
    sent_job(client, auth, conn, BIG_ID)
    post_events(client, [event("spam", BIG_ID, source="JMRPP")])
    post_events(client, [event("open", BIG_ID)])  # ranked below spam: the status stays

    assert engagement(stats(client, auth)["day"]) == counts(delivered=1, opened=1, spam=1)
    assert conn.execute("SELECT status FROM recipients").fetchone() == ("spam",)
    activity = conn.execute("SELECT status FROM recipient_activity WHERE status <> 'sent' ORDER BY id").fetchall()
    assert activity == [("spam",)]  # the feed reports status changes only
    post_events(client, [event("open", BIG_ID, time=1)])  # a second open: nothing new
    assert engagement(stats(client, auth)["day"]) == counts(delivered=1, opened=1, spam=1)


def test_a_bounce_after_an_open_counts_bounced(client, auth, conn) -> None:
    sent_job(client, auth, conn, BIG_ID)
    post_events(client, [event("open", BIG_ID)])
    post_events(client, [event("bounce", BIG_ID, hard_bounce=True, error="user unknown")])

    assert engagement(stats(client, auth)["day"]) == counts(delivered=1, opened=1, bounced=1)
    assert conn.execute("SELECT status FROM recipients").fetchone() == ("opened",)


def test_each_status_implies_the_milestones_of_the_readme_table(conn) -> None:
    implied = dict(conn.execute(
        "SELECT status, mailer_recipient_milestones(status) FROM recipient_statuses ORDER BY rank, status"
    ).fetchall())
    assert implied == {
        "pending": [], "sent": [], "deferred": [], "delivered": ["delivered"], "blocked": ["blocked"],
        "bounced": ["bounced"], "opened": ["delivered", "opened"], "clicked": ["delivered", "opened", "clicked"],
        "unsubscribed": ["delivered", "unsubscribed"], "spam": ["delivered", "spam"], "failed": [], "suppressed": []}
    every = conn.execute("SELECT mailer_milestone_kinds(127::smallint)").fetchone()[0]
    assert every == list(KINDS)


def test_events_one_at_a_time_count_each_milestone_once(client, auth, conn) -> None:
    sent_job(client, auth, conn, BIG_ID)
    post_events(client, [event("sent", BIG_ID)])
    post_events(client, [event("open", BIG_ID)])
    post_events(client, [event("open", BIG_ID, time=1)])  # a second open: same status, no count
    post_events(client, [event("click", BIG_ID, url="https://example.com/")])
    post_events(client, [event("spam", BIG_ID, source="JMRPP")])

    day = stats(client, auth)["day"]
    assert engagement(day) == counts(delivered=1, opened=1, clicked=1, spam=1)
    assert day["rates"] == {"opened": 1.0, "clicked": 1.0, "bounced": 0.0, "blocked": 0.0, "spam": 1.0,
                            "unsubscribed": 0.0}


def test_a_click_alone_counts_delivered_opened_and_clicked(client, auth, conn) -> None:
    for offset in range(3):
        sent_job(client, auth, conn, BIG_ID + offset)
    post_events(client, [event("click", BIG_ID, url="https://example.com/")])
    post_events(client, [event("sent", BIG_ID + 1), event("sent", BIG_ID + 2), event("open", BIG_ID + 2)])

    day = stats(client, auth)["day"]
    assert engagement(day) == counts(delivered=3, opened=2, clicked=1)
    assert day["rates"]["opened"] == 0.6667 and day["rates"]["clicked"] == 0.3333


def test_a_day_without_deliveries_has_null_rates_and_the_counters_are_per_app(client, auth, conn) -> None:
    sent_job(client, auth, conn, BIG_ID)
    post_events(client, [event("blocked", BIG_ID, error="preblocked")])
    _, other_key = apps.create_app(conn, "shop")
    day = stats(client, auth)["day"]
    assert engagement(day) == counts(blocked=1)
    assert day["rates"] == dict.fromkeys(KINDS[1:])
    assert engagement(stats(client, {"Authorization": f"Bearer {other_key}"})["day"]) == counts()


def test_a_test_app_counts_what_each_magic_address_does(client, conn, settings) -> None:
    _, key = apps.create_app(conn, "sandbox", test=True)
    auth = {"Authorization": f"Bearer {key}"}
    for local in ("delivered", "opened", "clicked", "bounced", "deferred", "blocked", "spam", "unsubscribed"):
        assert client.post("/queue", json=message(f"{local}@{DOMAIN}"), headers=auth).status_code == 202
    assert run_sender(settings).sent == 8

    statuses = dict(conn.execute("SELECT split_part(email, '@', 1), status FROM recipients").fetchall())
    assert statuses["unsubscribed"] == "unsubscribed" and statuses["deferred"] == "deferred"
    day = stats(client, auth)["day"]
    # delivered: delivered, opened, clicked, spam, unsubscribed (whose timeline is delivered, opened, unsubscribed,
    # applied one by one: its open counts); deferred is no milestone.
    assert engagement(day) == counts(delivered=5, opened=3, clicked=1, bounced=1, blocked=1, spam=1, unsubscribed=1)
    assert day["rates"] == {"opened": 0.6, "clicked": 0.2, "bounced": 0.2, "blocked": 0.2, "spam": 0.2,
                            "unsubscribed": 0.2}
    assert (day["created"], day["sent"]) == (8, 8)


def retry(client, auth, conn: psycopg.Connection, job_id: str, recipient_status: str) -> None:  # type: ignore[no-untyped-def]
    """The job failed with its recipients in this status; POST /queue/{id}/retry resets them to pending."""
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", (job_id,))
    conn.execute("UPDATE recipients SET status = %s WHERE job_id = %s", (recipient_status, job_id))
    assert client.post(f"/queue/{job_id}/retry", headers=auth).status_code == 202
    assert conn.execute("SELECT status, milestones FROM recipients WHERE job_id = %s", (job_id,)).fetchone() == (
        "pending", 0)


def test_a_failed_recipient_retried_and_delivered_counts_once_and_a_reset_counts_again(client, auth, conn) -> None:
    job_id = queue(client, auth)
    retry(client, auth, conn, job_id, "failed")
    mark_sent(conn, job_id, BIG_ID)
    post_events(client, [event("sent", BIG_ID), event("open", BIG_ID)])
    assert engagement(stats(client, auth)["day"]) == counts(delivered=1, opened=1)
    assert conn.execute("SELECT milestones FROM recipients WHERE job_id = %s", (job_id,)).fetchone() == (3,)

    # A recipient sent anew (a retry resets its status to pending and clears its milestones) is a new delivery.
    retry(client, auth, conn, job_id, "suppressed")
    conn.execute("UPDATE recipients SET status = 'delivered' WHERE job_id = %s", (job_id,))
    assert engagement(stats(client, auth)["day"]) == counts(delivered=2, opened=1)


def test_a_milestone_counts_on_the_utc_day_of_its_change_not_of_the_job(client, auth, conn) -> None:
    created = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    job_id = queue(client, auth)
    conn.execute("UPDATE jobs SET created_at = %s WHERE id = %s", (created, job_id))
    conn.execute("UPDATE job_counts SET day = %s WHERE kind = 'created'", (created.date(),))  # as if queued then
    mark_sent(conn, job_id, BIG_ID)
    post_events(client, [event("open", BIG_ID, time=int(created.timestamp()))])  # Mailjet's time: not the day

    response = client.get(f"/stats?since={created.date()}", headers=auth)
    days = {day["date"]: day for day in response.json["days"]}
    assert (days[created.date().isoformat()]["created"], days[created.date().isoformat()]["opened"]) == (1, 0)
    assert engagement(days[today()]) == counts(delivered=1, opened=1)
    assert engagement(response.json["totals"]) == counts(delivered=1, opened=1)


def test_a_recipient_stored_with_a_status_counts_its_milestones(client, auth, conn) -> None:
    job_id = queue(client, auth)
    conn.execute(
        "INSERT INTO recipients (job_id, kind, position, email, status)"
        " VALUES (%s, 'cc', 0, 'cc@example.org', 'clicked')",
        (job_id,),
    )
    assert engagement(stats(client, auth)["day"]) == counts(delivered=1, opened=1, clicked=1)


def test_concurrent_writers_on_one_app_and_day_lose_no_count(client, auth, conn, database_url) -> None:
    writers, each = 6, 20
    jobs = [queue(client, auth, *(f"r{w}-{n}@example.org" for n in range(each))) for w in range(writers)]

    def deliver(job_id: str) -> None:
        with psycopg.connect(database_url) as own:  # a session (and a shard) of its own, one change per statement
            for position in range(each):
                with own.transaction():
                    own.execute("UPDATE recipients SET status = 'opened' WHERE job_id = %s AND position = %s",
                                (job_id, position))

    with concurrent.futures.ThreadPoolExecutor(writers) as pool:
        list(pool.map(deliver, jobs, timeout=60))
    assert engagement(stats(client, auth)["day"]) == counts(delivered=writers * each, opened=writers * each)


def test_the_migration_counted_what_recipients_already_said(conn) -> None:
    # The backfill's statement (0046) over rows stored without the counting trigger: one app, two days.
    app_id = apps.create_app(conn, "old")[0].id
    conn.execute("ALTER TABLE recipients DISABLE TRIGGER recipients_activity")
    conn.execute("ALTER TABLE recipients DISABLE TRIGGER recipients_activity_insert")
    try:
        job = conn.execute("INSERT INTO jobs (id, app_id, status, priority, message, run_at) VALUES (%s, %s, 'sent',"
                           " 'bulk', '{}', now()) RETURNING id", (uuid.uuid4(), app_id)).fetchone()[0]
        # The last one: a bounce after an open (0045's bits), stored between 0045 and 0046.
        for position, (status, bits, day) in enumerate([("clicked", 0, "2026-03-01"), ("spam", 0, "2026-03-01"),
                                                        ("bounced", 0, "2026-03-02"), ("sent", 0, "2026-03-02"),
                                                        ("bounced", 1 | 2, "2026-03-02")]):
            conn.execute("INSERT INTO recipients (job_id, kind, position, email, status, milestones, updated_at)"
                         " VALUES (%s, 'to', %s, 'a@example.org', %s, %s, %s)",
                         (job, position, status, bits, f"{day}T23:00Z"))
    finally:
        conn.execute("ALTER TABLE recipients ENABLE TRIGGER recipients_activity")
        conn.execute("ALTER TABLE recipients ENABLE TRIGGER recipients_activity_insert")
    migration = pathlib.Path(__file__).resolve().parents[2] / "sql" / "migrations" / "0046_engagement_counting.sql"
    backfill = migration.read_text().split("-- What exists already")[1].split("\n", 2)[2]
    conn.execute(backfill)  # type: ignore[arg-type]
    found = conn.execute("SELECT day::text, kind, sum(count)::int FROM job_counts"
                         " WHERE app_id = %s AND kind <> ALL ('{created,sent}') GROUP BY 1, 2 ORDER BY 1, 2",
                         (app_id,)).fetchall()
    assert found == [("2026-03-01", "clicked", 1), ("2026-03-01", "delivered", 2), ("2026-03-01", "opened", 1),
                     ("2026-03-01", "spam", 1), ("2026-03-02", "bounced", 2), ("2026-03-02", "delivered", 1),
                     ("2026-03-02", "opened", 1)]


# --- the dashboard ----------------------------------------------------------------------------------------


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(settings, operator_token=OPERATOR, secret_key="dashboard-test-secret-key")


def cell(html: str, cell_id: str) -> str:
    match = re.search(rf'id="{cell_id}">([^<]*)<', html)
    assert match, cell_id
    return match.group(1)


def test_the_app_page_and_the_operator_page_show_the_recipients(client, auth, conn) -> None:
    for offset in range(4):
        sent_job(client, auth, conn, BIG_ID + offset)
    post_events(client, [event("sent", BIG_ID + n) for n in range(4)] + [event("open", BIG_ID)])
    _, other_key = apps.create_app(conn, "shop")
    other = {"Authorization": f"Bearer {other_key}"}
    mark_sent(conn, queue(client, other), BIG_ID + 10)
    post_events(client, [event("click", BIG_ID + 10, url="https://example.com/")])
    app_id = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()[0]
    sandbox = apps.create_app(conn, "sandbox", test=True)[0]
    conn.execute("INSERT INTO job_counts (app_id, day, kind, shard, count)"
                 " VALUES (%s, (now() AT TIME ZONE 'UTC')::date, 'delivered', 0, 7)", (sandbox.id,))

    page = client.get(f"/dashboard/apps/{app_id}", headers=auth).text
    assert cell(page, "total-delivered") == "4" and cell(page, "total-opened") == "1"
    assert cell(page, "total-rate-opened") == "25.0 %" and cell(page, "total-rate-bounced") == "0.0 %"
    assert page.count('<rect class="delivered"') == 14
    assert client.get("/dashboard", headers=auth).status_code == 302  # an app's key: its own page only

    form = client.get("/dashboard/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf
    login = client.post("/dashboard/login", data={"token": OPERATOR, "csrf_token": csrf.group(1), "next": ""})
    assert login.status_code in (302, 303), login.text
    overview = client.get("/dashboard").text
    assert cell(overview, "total-delivered") == "5" and cell(overview, "total-clicked") == "1"
    assert cell(overview, "total-rate-opened") == "40.0 %"  # billing's open and shop's click: 2 of 5
    rows = {name: row for row in overview.split("<tr>") for name in ("billing", "shop", "sandbox")
            if f">{name}</a>" in row}
    assert '<td class="num delivered">7</td>' in rows["sandbox"]  # shown in its row, left out of the live totals
    assert '<td class="num delivered">4</td>' in rows["billing"]
    assert '<td class="num opened">25.0 %</td>' in rows["billing"]
    assert '<td class="num clicked">100.0 %</td>' in rows["shop"]


def test_openapi_names_every_field_the_answer_carries(client, auth, conn) -> None:
    sent_job(client, auth, conn, BIG_ID)
    post_events(client, [event("open", BIG_ID)])
    answer = client.get("/stats", headers=auth).json
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    ref = schemas["Stats"]["properties"]["days"]["items"]
    day_schema = schemas[(ref.get("$ref") or ref["allOf"][0]["$ref"]).rsplit("/", 1)[1]]
    assert set(answer) == set(schemas["Stats"]["properties"]) == set(schemas["Stats"]["required"])
    assert set(answer["days"][-1]) == set(day_schema["properties"]) == set(day_schema["required"])
    assert set(answer["days"][-1]["rates"]) == set(schemas["Rates"]["properties"])
    assert answer["days"][-1]["rates"]["opened"] == 1.0
    assert responses.StatsSchema().validate(answer) == {}


def test_a_one_click_unsubscribe_counts_unsubscribed_once(client, auth, conn) -> None:
    from tests.integration.test_unsubscribe_status import ONE_CLICK, sent_bulk, token_for

    app_id = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()[0]
    job_id = sent_bulk(client, auth, conn, "ann@example.org")
    token = token_for(conn, app_id, job_id, "ann@example.org")
    for _ in range(2):  # a second click moves nothing and counts nothing
        assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200
    # sent → unsubscribed proves the delivery too (the recipient had no delivered event yet).
    assert engagement(stats(client, auth)["day"]) == counts(delivered=1, unsubscribed=1)
