"""/templates: create, versions that never change, the active version, preview, delete, and isolation."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from mailer.services import templates as template_service
from mailer.store import templates as template_store
from tests.integration.conftest import app_with, make_key

RECEIPT = {
    "name": "receipt",
    "subject": "Receipt for {{ name }}",
    "html": "<p>Hello {{ name }}</p>{% for item in items %}<li>{{ item }}</li>{% endfor %}",
    "text": "Hello {{ name }}",
    "variables": {"type": "object", "properties": {"name": {"type": "string"}, "items": {"type": "array"}},
                  "required": ["name", "items"]},
}
TABLES = ("templates", "template_versions")


def error_details(response, status: int, code: str) -> dict:
    """The response is the one error shape with this status and code; its details."""
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert list(body) == ["error"] and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]["details"]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
        for table in TABLES
    }


def create(client, auth, **overrides) -> dict:  # type: ignore[no-untyped-def]
    response = client.post("/templates", json=RECEIPT | overrides, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_answers_version_1_active(client, auth):
    created = create(client, auth)
    assert set(created) == {"id", "name", "version", "active_version"}
    assert (created["name"], created["version"], created["active_version"]) == ("receipt", 1, 1)
    uuid.UUID(created["id"])


def test_versions_are_numbered_and_patch_chooses_the_active_one(client, auth):
    template_id = create(client, auth)["id"]
    added = client.post(f"/templates/{template_id}/versions", json={"subject": "v2 {{ name }}", "text": "two"},
                        headers=auth)
    assert added.status_code == 201, added.get_json()
    assert (added.json["version"], added.json["active_version"]) == (2, 1)  # adding does not activate
    assert client.patch(f"/templates/{template_id}", json={"active_version": 2}, headers=auth).json[
        "active_version"] == 2
    shown = client.get(f"/templates/{template_id}", headers=auth).json
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][0]["html"] == RECEIPT["html"] and shown["versions"][1]["text"] == "two"
    assert shown["versions"][0]["variables"] == RECEIPT["variables"]
    assert (shown["active_version"], shown["latest_version"]) == (2, 2)


def test_patch_to_a_version_that_does_not_exist_is_422(client, auth):
    template_id = create(client, auth)["id"]
    details = error_details(client.patch(f"/templates/{template_id}", json={"active_version": 3}, headers=auth),
                            422, "validation_error")
    assert "active_version" in details
    assert client.get(f"/templates/{template_id}", headers=auth).json["active_version"] == 1


def test_list_pages_through_every_template_once(client, auth):
    made = {create(client, auth, name=f"t{n}")["id"] for n in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/templates", query_string=query, headers=auth).json
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 5


def test_render_previews_without_storing(client, auth, conn):
    template_id = create(client, auth)["id"]
    before = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    response = client.post(f"/templates/{template_id}/render",
                           json={"variables": {"name": "<Ann>", "items": ["a", "b"]}}, headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.json == {"subject": "Receipt for <Ann>", "html": "<p>Hello &lt;Ann&gt;</p><li>a</li><li>b</li>",
                             "text": "Hello <Ann>"}
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == before


def test_render_a_given_version_and_an_unknown_one(client, auth):
    template_id = create(client, auth)["id"]
    client.post(f"/templates/{template_id}/versions", json={"subject": "second", "text": "v2"}, headers=auth)
    assert client.post(f"/templates/{template_id}/render", json={"version": 2}, headers=auth).json["text"] == "v2"
    details = error_details(client.post(f"/templates/{template_id}/render", json={"version": 9}, headers=auth),
                            422, "validation_error")
    assert "version" in details


def test_render_with_missing_variables_names_them(client, auth):
    template_id = create(client, auth)["id"]
    details = error_details(client.post(f"/templates/{template_id}/render", json={"variables": {"name": "Ann"}},
                                        headers=auth), 422, "validation_error")
    assert any("items" in problem for problem in details["variables"])


@pytest.mark.parametrize(("body", "field"), [
    ({"html": "<p>{{ name </p>"}, "html"),                               # does not parse
    ({"subject": "{% if %}"}, "subject"),
    ({"variables": {"type": "no such type"}}, "variables"),              # not a JSON Schema
    ({"html": None, "text": None}, "html"),                              # no body
    ({"name": "x" * 201}, "name"),                                       # name too long
    ({"name": ""}, "name"),
    ({"subject": None}, "subject"),
    ({"unknown": 1}, "unknown"),
])
def test_bad_templates_are_422_naming_the_field_and_store_nothing(client, auth, conn, body, field):
    before = counts(conn)
    details = error_details(client.post("/templates", json=RECEIPT | body, headers=auth), 422, "validation_error")
    assert field in details
    assert counts(conn) == before


def test_a_parse_error_names_the_line(client, auth):
    details = error_details(client.post("/templates", json=RECEIPT | {"html": "<p>\n\n{{ name </p>"}, headers=auth),
                            422, "validation_error")
    assert "line 3" in details["html"][0]


def test_an_oversized_template_is_422(client, auth, conn, settings):
    before = counts(conn)
    big = "x" * (settings.template_max_bytes + 1)
    details = error_details(client.post("/templates", json=RECEIPT | {"html": big}, headers=auth),
                            422, "validation_error")
    assert "html" in details
    assert counts(conn) == before


def test_a_bad_version_stores_nothing(client, auth, conn):
    template_id = create(client, auth)["id"]
    before = counts(conn)
    response = client.post(f"/templates/{template_id}/versions", json={"subject": "s", "text": "{% for %}"},
                           headers=auth)
    assert "text" in error_details(response, 422, "validation_error")
    assert counts(conn) == before


def test_versions_never_change_not_even_by_sql(client, auth, conn):
    template_id = create(client, auth)["id"]
    with pytest.raises(psycopg.errors.RestrictViolation, match="never change"):
        conn.execute("UPDATE template_versions SET html = 'changed' WHERE template_id = %s", (template_id,))
    conn.rollback()
    assert client.get(f"/templates/{template_id}", headers=auth).json["versions"][0]["html"] == RECEIPT["html"]


def test_another_apps_template_is_404_everywhere(client, auth, conn):
    template_id = create(client, auth)["id"]
    other = {"Authorization": f"Bearer {make_key(conn, 'other')}"}
    for response in (
        client.get(f"/templates/{template_id}", headers=other),
        client.post(f"/templates/{template_id}/versions", json={"subject": "s", "text": "t"}, headers=other),
        client.patch(f"/templates/{template_id}", json={"active_version": 1}, headers=other),
        client.post(f"/templates/{template_id}/render", json={"variables": {}}, headers=other),
        client.delete(f"/templates/{template_id}", headers=other),
        client.get("/templates/not-a-uuid", headers=other),
    ):
        error_details(response, 404, "not_found")
    assert client.get("/templates", headers=other).json["items"] == []
    assert client.get(f"/templates/{template_id}", headers=auth).status_code == 200


def test_delete_makes_it_404_and_frees_its_place(client, auth):
    template_id = create(client, auth)["id"]
    assert client.delete(f"/templates/{template_id}", headers=auth).status_code == 204
    error_details(client.get(f"/templates/{template_id}", headers=auth), 404, "not_found")
    error_details(client.delete(f"/templates/{template_id}", headers=auth), 404, "not_found")
    assert client.get("/templates", headers=auth).json["items"] == []


def test_templates_per_app_and_versions_per_template_are_bounded(settings, conn):
    auth = {"Authorization": f"Bearer {make_key(conn, 'bounded')}"}
    with app_with(settings, template_max_per_app=2, template_max_versions=2) as application:
        client = application.test_client()
        template_id = create(client, auth, name="a")["id"]
        create(client, auth, name="b")
        before = counts(conn)
        details = error_details(client.post("/templates", json=RECEIPT, headers=auth), 422, "validation_error")
        assert details["limit"] == 2
        assert client.post(f"/templates/{template_id}/versions", json={"subject": "s", "text": "t"},
                           headers=auth).status_code == 201
        details = error_details(client.post(f"/templates/{template_id}/versions", json={"subject": "s", "text": "t"},
                                            headers=auth), 422, "validation_error")
        assert "versions" in details
        assert counts(conn)["templates"] == before["templates"]
        client.delete(f"/templates/{template_id}", headers=auth)  # a deleted one leaves room
        create(client, auth, name="c")


def test_the_compiled_cache_is_bounded_and_keeps_the_recent():
    cache = template_service.CompiledCache(2, max_bytes=1000)
    keys = [(uuid.uuid4(), 1) for _ in range(3)]
    for key in keys:
        cache.put(key, object(), 10)  # type: ignore[arg-type]
        cache.get(keys[0])  # the first stays recent
    assert set(cache.held()) == {keys[0], keys[2]}


def test_the_compiled_cache_is_bounded_by_source_size_too():
    cache = template_service.CompiledCache(10, max_bytes=100)
    keys = [(uuid.uuid4(), 1) for _ in range(4)]
    cache.put(keys[0], object(), 60)  # type: ignore[arg-type]
    cache.put(keys[1], object(), 30)  # type: ignore[arg-type]
    cache.put(keys[2], object(), 30)  # type: ignore[arg-type]  # 120 bytes: the oldest goes
    assert cache.held() == [keys[1], keys[2]]
    cache.put(keys[3], object(), 101)  # type: ignore[arg-type]  # larger than the whole cache: not kept
    assert cache.held() == [keys[1], keys[2]]
    assert template_service.source_bytes({"subject": "ab", "html": None, "text": "cde", "variables": {}}) == 7


def test_the_openapi_document_describes_the_template_endpoints_from_their_schemas(client):
    document = client.get("/openapi.json").json
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert set(paths["/templates"]) == {"get", "post"}
    assert set(paths["/templates/{template_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/templates/{template_id}/versions"]) == set(paths["/templates/{template_id}/render"]) == {"post"}
    body = paths["/templates"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TemplateCreate"}
    assert {"name", "subject"} <= set(schemas["TemplateCreate"]["required"])
    assert schemas["TemplateCreate"]["properties"]["name"]["maxLength"] == template_service.MAX_NAME
    assert "409" in paths["/templates/{template_id}"]["delete"]["responses"]
    assert "template" in schemas["JobStatus"]["properties"] and "template" in schemas["Schedule"]["properties"]


def test_patch_during_a_version_insert_waits_for_it_and_sees_its_version(client, auth, conn, database_url):
    template_id = uuid.UUID(create(client, auth)["id"])
    client.post(f"/templates/{template_id}/versions", json={"subject": "s", "text": "two"}, headers=auth)
    app_id = conn.execute("SELECT app_id FROM templates WHERE id = %s", (template_id,)).fetchone()[0]
    with psycopg.connect(database_url, row_factory=dict_row) as adding, \
            psycopg.connect(database_url, row_factory=dict_row) as patching:
        added = template_store.insert_template_version(
            adding, app_id=app_id, template_id=template_id, source={"subject": "s", "text": "t"}, max_versions=100
        )
        assert added is not None and added["version"] == 3  # not committed: the template's row stays locked
        # Version 3 does not exist yet for anyone else: refused at once, without waiting.
        assert template_store.set_template_active_version(
            patching, app_id=app_id, template_id=template_id, version=3) is None
        patching.rollback()
        result: dict[str, Any] = {}

        def patch() -> None:
            result["row"] = template_store.set_template_active_version(
                patching, app_id=app_id, template_id=template_id, version=2
            )
            patching.commit()

        thread = threading.Thread(target=patch)
        thread.start()
        deadline = time.monotonic() + 10
        while not conn.execute("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s AND wait_event_type"
                               " = 'Lock')", (patching.info.backend_pid,)).fetchone()[0]:
            assert time.monotonic() < deadline and thread.is_alive(), f"the PATCH never waited: {result}"
            time.sleep(0.01)
        adding.commit()
        thread.join(10)
        assert not thread.is_alive()
    assert (result["row"]["active_version"], result["row"]["latest_version"]) == (2, 3)
