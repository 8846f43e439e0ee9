"""/webhooks: create (secret once), list, get, patch, delete, rotate; validation, isolation, SSRF refusals."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import itertools
import uuid

import pytest

from mailer import create_app
from tests.integration.conftest import make_key

PUBLIC_URL = "https://93.184.215.14/hooks/mailer"  # a public IP literal: no DNS needed, never called here
ENDPOINT_KEYS = ["id", "url", "events", "enabled", "disabled_at", "disabled_reason", "previous_secret_expires_at",
                 "created_at", "updated_at"]


_SERIAL = itertools.count(1)


def create(client, auth, url=None, events=("delivered", "bounced")):
    """Register an endpoint; each without a `url` gets one of its own (one endpoint per URL per app)."""
    url = url or f"{PUBLIC_URL}/{next(_SERIAL)}"
    return client.post("/webhooks", json={"url": url, "events": list(events)}, headers=auth)


def test_create_answers_201_with_a_secret_shown_once(client, auth, conn):
    response = create(client, auth, url=PUBLIC_URL)

    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    created = response.json
    assert list(created) == [*ENDPOINT_KEYS, "secret"]
    assert created["url"] == PUBLIC_URL
    assert created["events"] == ["delivered", "bounced"]
    assert created["enabled"] is True
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"][6:])) == 32
    shown = client.get(f"/webhooks/{created['id']}", headers=auth).json
    assert list(shown) == ENDPOINT_KEYS  # never the secret again
    assert client.get("/webhooks", headers=auth).json == {"items": [shown]}
    assert created["secret"] not in str(client.get("/webhooks", headers=auth).data)


def test_events_default_to_all_and_duplicates_collapse(client, auth):
    assert client.post("/webhooks", json={"url": PUBLIC_URL}, headers=auth).json["events"] == ["*"]
    assert create(client, auth, events=["opened", "opened", "sent"]).json["events"] == ["opened", "sent"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["*"]}, "url"),
        ({"url": PUBLIC_URL, "events": ["delivered", "open"]}, "events"),  # Mailjet's name, not ours
        ({"url": PUBLIC_URL, "events": ["pending"]}, "events"),
        ({"url": PUBLIC_URL, "events": []}, "events"),
        ({"url": PUBLIC_URL, "events": "delivered"}, "events"),
        ({"url": PUBLIC_URL, "events": [1]}, "events"),
        ({"url": 5}, "url"),
        ({"url": PUBLIC_URL, "secret": "whsec_mine"}, "secret"),
        ({"url": "ftp://93.184.215.14/x"}, "url"),
        ({"url": ""}, "url"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(client, auth, body, field):
    response = client.post("/webhooks", json=body, headers=auth)

    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_error"
    assert field in response.json["error"]["details"]


def test_a_body_that_is_not_json_is_400(client, auth):
    response = client.post("/webhooks", data="{nope", headers=auth | {"Content-Type": "application/json"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/",
        "http://localhost:9000/hook",
        "https://2130706433/",  # 127.0.0.1 written as one number
    ],
)
def test_private_and_loopback_urls_are_refused(client, auth, url):
    response = create(client, auth, url=url)

    assert response.status_code == 422
    assert "forbidden address" in response.json["error"]["details"]["url"][0]


def test_patch_cannot_point_an_endpoint_at_a_private_address(client, auth):
    endpoint = create(client, auth, url=PUBLIC_URL).json
    response = client.patch(f"/webhooks/{endpoint['id']}", json={"url": "http://127.0.0.1/"}, headers=auth)
    assert response.status_code == 422
    assert client.get(f"/webhooks/{endpoint['id']}", headers=auth).json["url"] == PUBLIC_URL


def test_allow_private_admits_loopback_but_never_cloud_metadata(settings, conn):
    app = create_app(dataclasses.replace(settings, webhook_allow_private=True))
    try:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {make_key(conn, 'dev')}"}
        assert create(client, auth, url="http://127.0.0.1:9/hook").status_code == 201
        assert create(client, auth, url="http://localhost:9/hook").status_code == 201
        assert create(client, auth, url="http://169.254.169.254/").status_code == 422
    finally:
        app.extensions["mailer.pool"].close()


def test_patch_changes_url_events_and_enabled(client, auth):
    endpoint = create(client, auth).json
    url = f"/webhooks/{endpoint['id']}"

    changed = client.patch(url, json={"url": PUBLIC_URL + "/v2", "events": ["*"]}, headers=auth).json
    assert (changed["url"], changed["events"], changed["enabled"]) == (PUBLIC_URL + "/v2", ["*"], True)
    assert changed["updated_at"] >= endpoint["updated_at"]

    disabled = client.patch(url, json={"enabled": False}, headers=auth).json
    assert disabled["enabled"] is False
    assert disabled["disabled_at"] is not None
    assert disabled["disabled_reason"] == "disabled through the API"

    enabled = client.patch(url, json={"enabled": True}, headers=auth).json
    assert (enabled["enabled"], enabled["disabled_at"], enabled["disabled_reason"]) == (True, None, None)
    assert client.patch(url, json={}, headers=auth).json["url"] == PUBLIC_URL + "/v2"  # nothing to change


@pytest.mark.parametrize("body", [{"enabled": "yes"}, {"enabled": 1}, {"events": ["nope"]}, {"url": None},
                                  {"secret": "x"}])
def test_patch_validates_like_create(client, auth, body):
    endpoint = create(client, auth).json
    assert client.patch(f"/webhooks/{endpoint['id']}", json=body, headers=auth).status_code == 422


def test_delete_answers_204_then_the_endpoint_is_gone(client, auth):
    endpoint = create(client, auth).json
    assert client.delete(f"/webhooks/{endpoint['id']}", headers=auth).status_code == 204
    assert client.get(f"/webhooks/{endpoint['id']}", headers=auth).status_code == 404
    assert client.delete(f"/webhooks/{endpoint['id']}", headers=auth).status_code == 404
    assert client.get("/webhooks", headers=auth).json == {"items": []}


def test_rotation_gives_a_new_secret_and_keeps_the_old_for_24_hours(client, auth):
    endpoint = create(client, auth).json
    response = client.post(f"/webhooks/{endpoint['id']}/rotate-secret", headers=auth)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    rotated = response.json
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != endpoint["secret"]
    expires = dt.datetime.fromisoformat(rotated["previous_secret_expires_at"].replace("Z", "+00:00"))
    overlap = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23, minutes=59) < overlap <= dt.timedelta(hours=24)


def test_another_apps_endpoint_is_404_everywhere(client, auth, conn):
    other = {"Authorization": f"Bearer {make_key(conn, 'other')}"}
    endpoint = create(client, auth).json
    url = f"/webhooks/{endpoint['id']}"

    assert client.get("/webhooks", headers=other).json == {"items": []}
    assert client.get(url, headers=other).status_code == 404
    assert client.patch(url, json={"enabled": False}, headers=other).status_code == 404
    assert client.delete(url, headers=other).status_code == 404
    assert client.post(f"{url}/rotate-secret", headers=other).status_code == 404
    assert client.get(f"{url}/deliveries", headers=other).status_code == 404
    assert client.post(f"{url}/deliveries/1/replay", headers=other).status_code == 404
    assert client.get(url, headers=auth).json["enabled"] is True  # untouched


@pytest.mark.parametrize("path", ["/webhooks/not-a-uuid", f"/webhooks/{uuid.uuid4()}"])
def test_unknown_ids_are_404(client, auth, path):
    assert client.get(path, headers=auth).status_code == 404
    assert client.get(path + "/deliveries", headers=auth).status_code == 404


def test_webhooks_need_an_api_key(client):
    assert client.get("/webhooks").status_code == 401
    assert client.post("/webhooks", json={"url": PUBLIC_URL}).status_code == 401


def test_delivery_list_query_is_validated(client, auth):
    endpoint = create(client, auth).json
    url = f"/webhooks/{endpoint['id']}/deliveries"
    assert client.get(url, headers=auth).json == {"items": [], "next_cursor": None}
    for query in ("?limit=0", "?limit=abc", "?status=done", "?cursor=-1", "?cursor=99999999999999999999", "?x=1",
                  "?limit=1&limit=2"):
        assert client.get(url + query, headers=auth).status_code == 422, query
    assert client.post(f"/webhooks/{endpoint['id']}/deliveries/99999999999999999999/replay",
                       headers=auth).status_code == 404
