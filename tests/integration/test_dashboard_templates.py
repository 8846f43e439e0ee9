"""/dashboard's templates pages with the Flask client: the list, a template's versions, the rendered preview
(escaped into a sandboxed iframe), its errors, who sees what, and the job page's template line."""

from __future__ import annotations

import dataclasses
import html
import html.parser
import json
import re
import urllib.parse
import uuid

import psycopg
import pytest

from mailer.config import Settings
from mailer.dashboard import template_pages
from mailer.services import templates
from tests.integration.conftest import app_with, make_key

OPERATOR = "operator-token-for-tests-0123"
RECEIPT = {
    "name": "receipt",
    "subject": "Receipt for {{ name }}",
    "html": "<p>Hello {{ name }}</p><ul>{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>",
    "text": "Hello {{ name }},\n{% for item in items %}- {{ item }}\n{% endfor %}",
    "variables": {
        "type": "object", "required": ["name", "items"],
        "properties": {"name": {"type": "string"}, "items": {"type": "array", "items": {"type": "string"}}},
        "examples": [{"name": "Ann <ann@example.org>", "items": ["Tea", "Cake"]}],
    },
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, operator_token=OPERATOR, secret_key="dashboard-test-secret-key")


def app_id_of(conn: psycopg.Connection, name: str) -> int:
    return int(conn.execute("SELECT id FROM apps WHERE name = %s", (name,)).fetchone()[0])  # type: ignore[index]


def create(client, auth, **overrides) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/templates", json=RECEIPT | overrides, headers=auth)
    assert response.status_code == 201, response.get_json()
    return str(response.json["id"])


class Page(html.parser.HTMLParser):
    """The elements of a page by id (their attributes and text), and every iframe."""

    VOID = frozenset({"input", "br", "meta", "link", "img", "hr"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.iframes: list[dict[str, str | None]] = []
        self.texts: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "iframe":
            self.iframes.append(found)
        element = found.get("id")
        if element:
            self.by_id[element] = found
            self.texts[element] = ""
        if tag not in self.VOID:
            self._open.append((tag, element))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for _, element in self._open:
            if element:
                self.texts[element] += data


def page_url(app_id: int, template_id: str, **query: object) -> str:
    base = f"/dashboard/apps/{app_id}/templates/{template_id}"
    return f"{base}?{urllib.parse.urlencode(query)}" if query else base


def test_the_app_page_links_its_templates_listed_with_their_versions(client, conn, auth):
    billing = app_id_of(conn, "billing")
    receipt = create(client, auth)
    welcome = create(client, auth, name="welcome", variables=None)
    client.post(f"/templates/{receipt}/versions", json={"subject": "v2", "text": "two"}, headers=auth)
    client.post(f"/templates/{receipt}/versions", json={"subject": "v3", "text": "three"}, headers=auth)
    client.patch(f"/templates/{receipt}", json={"active_version": 2}, headers=auth)

    home = client.get(f"/dashboard/apps/{billing}", headers=auth)
    assert f'href="/dashboard/apps/{billing}/templates"' in home.text
    listed = client.get(f"/dashboard/apps/{billing}/templates", headers=auth)
    assert listed.status_code == 200
    row = re.search(rf'<tr id="template-{receipt}">(.*?)</tr>', listed.text, re.S)
    assert row, listed.text
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert ">receipt</a>" in cells[0] and f'href="/dashboard/apps/{billing}/templates/{receipt}"' in cells[0]
    assert cells[1:4] == [receipt, "2", "3"]  # id, active version, versions
    assert re.match(r"\d{4}-\d\d-\d\dT", cells[4])  # updated
    assert f'id="template-{welcome}"' in listed.text


def test_the_list_pages_on_and_says_when_its_cursor_is_not_one_it_gave(client, conn, auth, monkeypatch):
    monkeypatch.setattr(template_pages, "TEMPLATES_PER_PAGE", 2)
    billing = app_id_of(conn, "billing")
    ids = [create(client, auth, name=f"t{n}") for n in range(3)]
    first = client.get(f"/dashboard/apps/{billing}/templates", headers=auth).text
    assert ids[2] in first and ids[1] in first and ids[0] not in first  # newest first
    more = re.search(r'href="([^"]+)" rel="next"', first)
    assert more
    second = client.get(html.unescape(more.group(1)), headers=auth).text
    assert ids[0] in second and ids[2] not in second and 'rel="next"' not in second
    bad = client.get(f"/dashboard/apps/{billing}/templates?cursor=zzz", headers=auth)
    assert bad.status_code == 200 and "not valid" in bad.text and ids[2] in bad.text


def test_a_template_page_shows_its_versions_and_previews_the_schemas_example(client, conn, auth):
    billing = app_id_of(conn, "billing")
    template_id = create(client, auth)
    client.post(f"/templates/{template_id}/versions", json={"subject": "v2 {{ name }}", "text": "two"}, headers=auth)

    page = client.get(page_url(billing, template_id), headers=auth)
    assert page.status_code == 200
    parsed = Page(page.text)
    assert set(parsed.by_id) >= {"version-1", "version-2", "preview-subject", "preview-text", "preview-html"}
    assert "active" in re.search(r'<tr id="version-1">(.*?)</tr>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert "active" not in re.search(r'<tr id="version-2">(.*?)</tr>', page.text, re.S).group(1)  # type: ignore[union-attr]
    # The form starts from the schema's first example, and the active version's preview is what the API renders.
    example = RECEIPT["variables"]["examples"][0]  # type: ignore[index]
    assert json.loads(parsed.texts["preview-variables"]) == example
    assert re.search(r'<option value="1" selected>1 \(active\)</option>', page.text)
    rendered = client.post(f"/templates/{template_id}/render", json={"variables": example}, headers=auth).json
    assert parsed.texts["preview-subject"] == rendered["subject"] == "Receipt for Ann <ann@example.org>"
    assert parsed.texts["preview-text"] == rendered["text"]
    assert parsed.by_id["preview-html"]["srcdoc"] == rendered["html"]
    assert "&lt;ann@example.org&gt;" in rendered["html"]  # the html part escapes the variables itself


def test_a_chosen_version_renders_with_the_typed_variables(client, conn, auth):
    billing = app_id_of(conn, "billing")
    template_id = create(client, auth)
    client.post(f"/templates/{template_id}/versions",
                json={"subject": "Second {{ name }}", "html": "<b>{{ name }}</b>"}, headers=auth)
    page = client.get(page_url(billing, template_id, version=2, variables='{"name": "Bob"}'), headers=auth)
    assert page.status_code == 200
    parsed = Page(page.text)
    assert parsed.texts["preview-subject"] == "Second Bob"
    assert parsed.by_id["preview-html"]["srcdoc"] == "<b>Bob</b>"
    assert "preview-text" not in parsed.by_id and "no text part" in page.text
    assert parsed.texts["preview-variables"] == '{"name": "Bob"}'  # what was typed stays in the form
    assert re.search(r'<option value="2" selected>2</option>', page.text)


def test_a_schemas_example_larger_than_the_forms_bound_still_renders(settings, conn, auth):
    billing = app_id_of(conn, "billing")
    with app_with(settings, dashboard_preview_max_bytes=64) as small:
        client = small.test_client()
        example = {"name": "Ann " + "x" * 100, "items": ["Tea"]}
        schema = {**RECEIPT["variables"], "examples": [example]}  # type: ignore[dict-item]
        template_id = create(client, auth, variables=schema)
        first = client.get(page_url(billing, template_id), headers=auth)
        assert first.status_code == 200
        assert Page(first.text).texts["preview-subject"] == f"Receipt for {example['name']}"
        typed = client.get(page_url(billing, template_id, variables=json.dumps(example)), headers=auth)
        assert typed.status_code == 422 and "at most 64 bytes" in typed.text


def test_the_html_goes_escaped_into_an_iframe_sandboxed_without_scripts(client, conn, auth):
    billing = app_id_of(conn, "billing")
    hostile = ('<p title="{{ name }}">"quoted" & \'single\'</p></iframe><script>alert(1)</script>'
               '<iframe src="https://evil.example/"></iframe><form action="/dashboard/logout"></form>')
    template_id = create(client, auth, html=hostile, variables=None)
    variables = {"name": 'x" onload="alert(2)', "items": []}
    page = client.get(page_url(billing, template_id, variables=json.dumps(variables)), headers=auth)
    assert page.status_code == 200
    rendered = client.post(f"/templates/{template_id}/render", json={"variables": variables}, headers=auth).json
    assert "</iframe><script>" in rendered["html"]
    parsed = Page(page.text)
    assert len(parsed.iframes) == 1  # the template's own iframe and closing tag stayed inside the attribute
    frame = parsed.iframes[0]
    assert frame["srcdoc"] == rendered["html"]
    assert "sandbox" in frame and not frame["sandbox"]  # sandboxed, and no allow-scripts (nor anything else)
    assert page.text.count("<iframe") == 1 and page.text.count("</iframe>") == 1
    assert "<script" not in page.text and "<form action=\"/dashboard/logout\"" not in page.text
    assert "source" in parsed.by_id  # the page goes on after the preview


def test_variables_that_do_not_fit_show_the_422s_message_and_details(client, conn, auth):
    billing = app_id_of(conn, "billing")
    template_id = create(client, auth)
    api = client.post(f"/templates/{template_id}/render", json={"variables": {"items": [1]}}, headers=auth)
    assert api.status_code == 422
    page = client.get(page_url(billing, template_id, variables='{"items": [1]}'), headers=auth)
    assert page.status_code == 422
    assert "text/html" in page.content_type and "Traceback" not in page.text
    error = Page(page.text).texts["preview-error"]
    assert api.json["error"]["message"] in error
    for problem in api.json["error"]["details"]["variables"]:
        assert problem in error
    assert "variables.name: is required" in error
    assert "preview-html" not in page.text  # no preview beside the error
    assert '{&#34;items&#34;: [1]}' in page.text  # the form keeps what was typed, to fix it


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"variables": "{not json"}, "not valid JSON"),
        ({"variables": "[1, 2]"}, "must be a JSON object"),
        ({"variables": '{"name": NaN}'}, "not valid JSON"),
        ({"variables": '{"name": "\\ud800"}'}, "not valid JSON"),
        ({"variables": "[" * 200 + "]" * 200}, "nest"),
        ({"variables": json.dumps({"name": "x" * 5000, "items": []})}, "MAILER_DASHBOARD_PREVIEW_MAX_BYTES"),
        ({"version": "9"}, "has no version 9"),
        ({"version": "two"}, "a version number"),
        ({"version": "99999999999"}, "a version number"),
    ],
)
def test_a_bad_form_is_a_clear_error_on_the_page(client, conn, auth, query, expected):
    billing = app_id_of(conn, "billing")
    template_id = create(client, auth)
    page = client.get(page_url(billing, template_id, **query), headers=auth)
    assert page.status_code == 422, page.text
    assert expected in html.unescape(Page(page.text).texts["preview-error"])
    assert "Traceback" not in page.text and "preview-html" not in page.text


def test_another_apps_template_is_404_and_the_operator_sees_every_apps(client, conn, auth):
    billing = app_id_of(conn, "billing")
    shop_auth = {"Authorization": f"Bearer {make_key(conn, 'shop')}"}
    shop = app_id_of(conn, "shop")
    theirs = create(client, shop_auth)
    ours = create(client, auth)
    listed = client.get(f"/dashboard/apps/{billing}/templates", headers=auth).text
    assert ours in listed and theirs not in listed
    for path in (page_url(billing, theirs), page_url(shop, theirs), f"/dashboard/apps/{shop}/templates",
                 page_url(billing, "not-a-uuid"), page_url(billing, "00000000-0000-0000-0000-000000000000")):
        assert client.get(path, headers=auth).status_code == 404, path
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert theirs in client.get(f"/dashboard/apps/{shop}/templates", headers=operator).text
    assert client.get(page_url(shop, theirs), headers=operator).status_code == 200
    assert client.get(page_url(billing, theirs), headers=operator).status_code == 404  # ids are per app
    client.delete(f"/templates/{ours}", headers=auth)
    assert client.get(page_url(billing, ours), headers=auth).status_code == 404


def test_the_pages_need_a_login(client, conn, auth):
    billing = app_id_of(conn, "billing")
    template_id = create(client, auth)
    for path in (f"/dashboard/apps/{billing}/templates", page_url(billing, template_id)):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/dashboard/login?next="), path


def test_the_job_page_names_the_template_and_version_it_was_rendered_from(client, conn, auth):
    billing = app_id_of(conn, "billing")
    template_id = create(client, auth)
    message = {"from": {"email": "a@example.com"}, "to": [{"email": "ann@example.org"}]}
    templated = client.post("/queue", json={**message, "template": {"id": template_id},
                                            "variables": {"name": "Ann", "items": []}}, headers=auth)
    assert templated.status_code == 202, templated.json
    plain = client.post("/queue", json={**message, "subject": "Hi", "text": "x"}, headers=auth).json["id"]
    page = client.get(f"/dashboard/apps/{billing}/jobs/{templated.json['id']}", headers=auth).text
    line = re.search(r'<td id="job-template">(.*?)</td>', page, re.S)
    assert line, page
    assert f'href="{page_url(billing, template_id, version=1)}"' in line.group(1)
    assert template_id in line.group(1) and "version 1" in line.group(1)
    assert 'id="job-template"' not in client.get(f"/dashboard/apps/{billing}/jobs/{plain}", headers=auth).text


def test_the_template_page_reads_only_the_shown_versions_source(client, conn, auth):
    billing = app_id_of(conn, "billing")
    template_id = create(client, auth)
    client.post(f"/templates/{template_id}/versions", json={"subject": "v2", "text": "two"}, headers=auth)
    for asked, shown_version in ((2, 2), (None, 1), (7, 1)):  # an unknown version shows the active one's source
        stored, shown = templates.page_of(conn, app_id=billing, template_id=uuid.UUID(template_id), version=asked)
        assert [set(v) for v in stored["versions"]] == [{"version", "created_at"}] * 2  # numbers and dates only
        assert shown["version"] == shown_version and shown["text"] == ("two" if shown_version == 2 else RECEIPT["text"])
