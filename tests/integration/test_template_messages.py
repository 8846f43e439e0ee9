"""Messages that name a stored template: rendered when accepted (POST /queue, batches, schedules), the job keeps
the rendered content and the version, and what the preview shows is what Mailjet gets."""

from __future__ import annotations

import datetime as dt

import psycopg
import requests
from prometheus_client import REGISTRY
from psycopg import sql

from mailer.services import scheduling, template_messages
from tests.integration.conftest import app_with, make_key
from tests.integration.sending_support import run_sender

RECEIPT = {
    "name": "receipt",
    "subject": "Receipt for {{ name }}",
    "html": "<p>Hello {{ name }}</p>{% for item in items %}<li>{{ item.title }}: {{ item.price }}</li>{% endfor %}",
    "text": "Hello {{ name }}, {{ items | length }} items",
    "variables": {
        "type": "object", "required": ["name", "items"],
        "properties": {"name": {"type": "string"}, "items": {"type": "array", "items": {
            "type": "object", "required": ["title", "price"], "properties": {"price": {"type": "number"}}}}},
    },
}
VARIABLES = {"name": "Ann & <Bob>", "items": [{"title": "Tea", "price": 3.5}, {"title": "Cake", "price": 4}]}
TABLES = ("jobs", "recipients", "job_events", "idempotency_keys", "schedules")


def templated(template: dict, variables: dict | None = None, to: str = "ann@example.org", **extra: object) -> dict:
    return {"from": {"email": "billing@example.com"}, "to": [{"email": to}], "template": template,
            "variables": VARIABLES if variables is None else variables, **extra}


def create_template(client, auth) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/templates", json=RECEIPT, headers=auth)
    assert response.status_code == 201, response.get_json()
    return str(response.json["id"])


def error_details(response, status: int, code: str = "validation_error") -> dict:
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert list(body) == ["error"] and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]["details"]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
        for table in TABLES
    }


def test_a_single_message_is_rendered_and_status_shows_the_template(client, auth, conn):
    template_id = create_template(client, auth)
    response = client.post("/queue", json=templated({"id": template_id}), headers=auth)
    assert response.status_code == 202, response.get_json()
    job_id = response.json["id"]
    message = conn.execute("SELECT message FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]
    assert message["subject"] == "Receipt for Ann & <Bob>"
    assert message["html"] == "<p>Hello Ann &amp; &lt;Bob&gt;</p><li>Tea: 3.5</li><li>Cake: 4</li>"
    assert message["text"] == "Hello Ann & <Bob>, 2 items"
    assert "template" not in message and message["variables"] is None  # nothing for Mailjet to render again
    status = client.get(f"/status/{job_id}", headers=auth).json
    assert status["template"] == {"id": template_id, "version": 1}
    plain = client.post("/queue", json={**templated({"id": template_id}), "template": None, "subject": "s",
                                        "text": "t"}, headers=auth)
    assert client.get(f"/status/{plain.json['id']}", headers=auth).json["template"] is None


def test_a_later_version_or_deletion_changes_nothing_for_an_accepted_job(client, auth, conn):
    template_id = create_template(client, auth)
    job_id = client.post("/queue", json=templated({"id": template_id}), headers=auth).json["id"]
    client.post(f"/templates/{template_id}/versions", json={"subject": "other", "text": "other"}, headers=auth)
    client.patch(f"/templates/{template_id}", json={"active_version": 2}, headers=auth)
    second = client.post("/queue", json=templated({"id": template_id}), headers=auth).json["id"]
    pinned = client.post("/queue", json=templated({"id": template_id, "version": 1}), headers=auth).json["id"]
    assert client.delete(f"/templates/{template_id}", headers=auth).status_code == 204
    rows = dict(conn.execute(
        "SELECT id::text, message->>'text' || ' v' || template_version FROM jobs WHERE id = ANY(%s::uuid[])",
        ([job_id, second, pinned],),
    ).fetchall())
    first = "Hello Ann & <Bob>, 2 items v1"
    assert rows == {job_id: first, second: "other v2", pinned: first}
    error_details(client.post("/queue", json=templated({"id": template_id}), headers=auth), 404, "not_found")


def test_the_preview_is_what_mailjet_gets(client, auth, send_settings, simulator):
    template_id = create_template(client, auth)
    preview = client.post(f"/templates/{template_id}/render", json={"variables": VARIABLES}, headers=auth).json
    job_id = client.post("/queue", json=templated({"id": template_id}), headers=auth).json["id"]
    assert run_sender(send_settings).sent == 1
    sent = requests.get(f"{simulator}/_sim/sends", params={"payloads": 1}, timeout=5).json()["messages"]
    [payload] = [m["payload"] for m in sent if m["custom_id"] == job_id]
    assert (payload["Subject"], payload["HTMLPart"], payload["TextPart"]) == (
        preview["subject"], preview["html"], preview["text"]
    )
    assert "Variables" not in payload and "TemplateID" not in payload


def test_a_batch_gives_each_message_its_own_variables(client, auth, conn):
    template_id = create_template(client, auth)
    names = [f"N{n}" for n in range(3)]
    body = {"messages": [templated({"id": template_id}, {**VARIABLES, "name": name}) for name in names]}
    body["messages"].append({"from": {"email": "billing@example.com"}, "to": [{"email": "x@example.org"}],
                             "subject": "plain", "text": "plain"})
    response = client.post("/queue", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    ids = [job["id"] for job in response.json["jobs"]]
    subjects = [conn.execute("SELECT message->>'subject', template_version FROM jobs WHERE id = %s", (job_id,))
                .fetchone() for job_id in ids]
    assert subjects == [(f"Receipt for {name}", 1) for name in names] + [("plain", None)]


def test_bad_variables_in_a_batch_are_named_by_index_and_nothing_is_stored(client, auth, conn):
    template_id = create_template(client, auth)
    good = templated({"id": template_id})
    missing = templated({"id": template_id}, {"items": []})
    wrong_type = templated({"id": template_id}, {**VARIABLES, "items": [{"title": "Tea", "price": "abc"}]})
    before = counts(conn)
    details = error_details(client.post("/queue", json={"messages": [good, missing, good, wrong_type]}, headers=auth),
                            422)
    assert set(details["messages"]) == {"1", "3"}
    assert any("name" in problem for problem in details["messages"]["1"]["variables"])
    assert any("items[0].price" in problem for problem in details["messages"]["3"]["variables"])
    assert counts(conn) == before


def test_a_missing_variable_is_named_once_in_a_single_message_and_in_a_batch(client, auth):
    # The template reads `name` and its schema requires it: one problem, in our words, not a second in jsonschema's.
    response = client.post("/templates", json={"name": "hello", "subject": "Hi", "html": "Hello {{ name }}",
                                               "variables": {"type": "object", "required": ["name"]}}, headers=auth)
    assert response.status_code == 201, response.get_json()
    template = {"id": response.json["id"]}
    single = {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}], "template": template}
    assert error_details(client.post("/queue", json=single, headers=auth), 422) == {
        "variables": ["variables.name: is required"]
    }
    batch = {"messages": [templated(template, {"name": "Ann"}), single]}
    assert error_details(client.post("/queue", json=batch, headers=auth), 422) == {
        "messages": {"1": {"variables": ["variables.name: is required"]}}
    }


def test_template_with_subject_text_html_or_mailjet_template_id_is_422(client, auth, conn):
    template_id = create_template(client, auth)
    before = counts(conn)
    for extra, fields in (({"subject": "s"}, {"subject"}), ({"text": "t", "html": "<p>"}, {"text", "html"}),
                          ({"template_id": 7}, {"template_id"})):
        details = error_details(client.post("/queue", json=templated({"id": template_id}, **extra), headers=auth),
                                422)
        assert fields <= set(details), details
    details = error_details(client.post("/queue", json={"messages": [templated({"id": template_id}, subject="s")]},
                                        headers=auth), 422)
    assert "subject" in details["messages"]["0"]
    assert counts(conn) == before


def test_an_unknown_version_and_another_apps_template_are_404_naming_it(client, auth, conn):
    template_id = create_template(client, auth)
    before = counts(conn)
    details = error_details(client.post("/queue", json=templated({"id": template_id, "version": 5}), headers=auth),
                            404, "not_found")
    assert "template" in details
    other = {"Authorization": f"Bearer {make_key(conn, 'other')}"}
    error_details(client.post("/queue", json=templated({"id": template_id}), headers=other), 404, "not_found")
    body = {"messages": [templated({"id": template_id}, to="a@example.org")] * 2}
    details = error_details(client.post("/queue", json=body, headers=other), 404, "not_found")
    assert set(details["messages"]) == {"0", "1"}
    assert counts(conn) == before


def test_idempotency_key_replays_a_templated_request(client, auth, conn):
    template_id = create_template(client, auth)
    headers = {**auth, "Idempotency-Key": "order-1"}
    first = client.post("/queue", json=templated({"id": template_id}), headers=headers)
    assert first.status_code == 202
    client.delete(f"/templates/{template_id}", headers=auth)  # the replay answers as the first did all the same
    again = client.post("/queue", json=templated({"id": template_id}), headers=headers)
    assert (again.status_code, again.json) == (202, first.json)
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    other_body = client.post("/queue", json=templated({"id": template_id}, {**VARIABLES, "name": "Zed"}),
                             headers=headers)
    error_details(other_body, 422)


def schedule_body(template: dict, variables: dict | None = None) -> dict:
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    return {"message": templated(template, variables), "start_at": f"{tomorrow}T09:00:00", "timezone": "UTC",
            "frequency": "DAILY", "count": 3}


def test_a_schedule_keeps_the_rendered_message_and_holds_its_template(client, auth, conn, database_url):
    template_id = create_template(client, auth)
    before = counts(conn)
    details = error_details(client.post("/schedules", json=schedule_body({"id": template_id}, {"name": "Ann"}),
                                        headers=auth), 422)
    assert "variables" in details["message"]
    assert counts(conn) == before
    created = client.post("/schedules", json=schedule_body({"id": template_id}), headers=auth)
    assert created.status_code == 201, created.get_json()
    assert created.json["template"] == {"id": template_id, "version": 1}
    assert created.json["message"]["subject"] == "Receipt for Ann & <Bob>"
    schedule_id = created.json["id"]
    # A new active version does not change what the schedule sends: what was accepted is what is sent.
    client.post(f"/templates/{template_id}/versions", json={"subject": "v2", "text": "v2"}, headers=auth)
    client.patch(f"/templates/{template_id}", json={"active_version": 2}, headers=auth)
    error_details(client.delete(f"/templates/{template_id}", headers=auth), 409, "conflict")
    with psycopg.connect(database_url) as own:
        scheduling.tick(own, now=dt.datetime.fromisoformat(created.json["next_occurrence"]), batch_size=50)
    [job_id] = client.get(f"/schedules/{schedule_id}", headers=auth).json["jobs"]
    job = client.get(f"/status/{job_id}", headers=auth).json
    assert job["template"] == {"id": template_id, "version": 1}
    assert conn.execute("SELECT message->>'subject' FROM jobs WHERE id = %s", (job_id,)).fetchone()[0] == (
        "Receipt for Ann & <Bob>"
    )
    # A PATCH with a plain message lets go of the template; then it can be deleted.
    plain = {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "s",
             "text": "t"}
    patched = client.patch(f"/schedules/{schedule_id}", json={"message": plain}, headers=auth)
    assert patched.status_code == 200, patched.get_json()
    assert patched.json["template"] is None
    assert client.delete(f"/templates/{template_id}", headers=auth).status_code == 204


def test_a_done_schedule_does_not_hold_its_template(client, auth):
    template_id = create_template(client, auth)
    schedule_id = client.post("/schedules", json=schedule_body({"id": template_id}), headers=auth).json["id"]
    client.post(f"/schedules/{schedule_id}/done", headers=auth)
    assert client.delete(f"/templates/{template_id}", headers=auth).status_code == 204
    error_details(client.post("/schedules", json=schedule_body({"id": template_id}), headers=auth), 404, "not_found")


def test_the_renders_of_one_request_are_bounded_in_time(settings, conn):
    auth = {"Authorization": f"Bearer {make_key(conn, 'budget')}"}
    with app_with(settings, template_request_render_ms=1) as application:
        client = application.test_client()
        template_id = create_template(client, auth)
        before = counts(conn)
        plain = {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "s",
                 "text": "t"}
        body = {"messages": [templated({"id": template_id}, to=f"p{n}@example.org") for n in range(250)]
                + [plain] * 250}
        refused = REGISTRY.get_sample_value("mailer_template_renders_total", {"outcome": "refused"}) or 0
        details = error_details(client.post("/queue", json=body, headers=auth), 422)
        assert "MAILER_TEMPLATE_REQUEST_RENDER_MS" in details["template"][0]
        assert counts(conn) == before
        # Only the templated messages left unrendered are counted, not the plain ones after them.
        assert 1 <= REGISTRY.get_sample_value("mailer_template_renders_total", {"outcome": "refused"}) - refused <= 250
        # The first templated message is always rendered, however short the budget.
        assert client.post("/queue", json={"messages": [plain, body["messages"][0]]}, headers=auth).status_code == 202


def test_one_request_names_a_bounded_number_of_templates(client, auth, conn):
    template_id = create_template(client, auth)
    limit = template_messages.MAX_TEMPLATES_PER_REQUEST
    before = counts(conn)
    over = {"messages": [templated({"id": template_id, "version": n}) for n in range(1, limit + 2)]}
    details = error_details(client.post("/queue", json=over, headers=auth), 422)
    assert list(details["messages"]) == [str(limit)] and f"at most {limit}" in details["messages"][str(limit)][
        "template"][0]
    assert counts(conn) == before
    # As many as the limit are read (here the versions past 1 do not exist: 404, not the limit's 422).
    error_details(client.post("/queue", json={"messages": over["messages"][:limit]}, headers=auth), 404, "not_found")


def test_a_slow_or_oversized_render_is_422_and_stores_nothing(settings, conn):
    auth = {"Authorization": f"Bearer {make_key(conn, 'slow')}"}
    with app_with(settings, template_render_timeout_ms=5) as application:
        client = application.test_client()
        loops = "{% for i in range(99999) %}{% for j in range(50) %}{{ j }}{% endfor %}{% endfor %}"
        slow = client.post("/templates", json={"name": "slow", "subject": "s", "text": loops}, headers=auth).json["id"]
        big = client.post("/templates", json={"name": "big", "subject": "s", "text": "{{ 'x' * n }}"},
                          headers=auth).json["id"]
        before = counts(conn)
        for template_id, variables in ((slow, {}), (big, {"n": settings.template_max_output_bytes + 1})):
            details = error_details(client.post("/queue", json=templated({"id": template_id}, variables),
                                                headers=auth), 422)
            assert list(details) == ["template"], details
        assert counts(conn) == before
        error_details(client.post(f"/templates/{slow}/render", json={}, headers=auth), 422)


def test_a_tiny_cache_still_renders_every_message_right(settings, conn):
    auth = {"Authorization": f"Bearer {make_key(conn, 'tiny')}"}
    with app_with(settings, template_cache_size=1) as application:
        client = application.test_client()
        first = client.post("/templates", json={"name": "a", "subject": "A {{ n }}", "text": "a"}, headers=auth)
        second = client.post("/templates", json={"name": "b", "subject": "B {{ n }}", "text": "b"}, headers=auth)
        body = {"messages": [templated({"id": template.json["id"]}, {"n": n}, to=f"p{n}@example.org")
                             for n, template in enumerate((first, second, first, second))]}
        for _ in range(2):  # each request finds the other template compiled, or not, as the tiny cache turns
            jobs = client.post("/queue", json=body, headers=auth).json["jobs"]
            subjects = [conn.execute("SELECT message->>'subject' FROM jobs WHERE id = %s", (job["id"],)).fetchone()[0]
                        for job in jobs]
            assert subjects == ["A 0", "B 1", "A 2", "B 3"]
