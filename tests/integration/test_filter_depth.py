"""A metadata filter's value is parsed as JSON within MAILER_MAX_JSON_DEPTH, like a body: 422, never a 500."""

from __future__ import annotations

import pytest

from tests.integration.test_events_api import assert_error


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("value", ["[" * 1000, deep(33), deep(500)], ids=["unclosed 1000", "33", "500"])
def test_a_deep_metadata_filter_on_logs_is_422_naming_the_limit(client, auth, value):
    response = client.get("/logs", query_string={"metadata.a": value}, headers=auth)
    assert_error(response, 422, "validation_error")
    assert "MAILER_MAX_JSON_DEPTH" in str(response.json["error"]["details"]["metadata.a"])


def test_a_metadata_filter_at_the_limit_is_a_filter(client, auth):
    response = client.get("/logs", query_string={"metadata.a": deep(32)}, headers=auth)
    assert response.status_code == 200, response.json
    assert response.json["items"] == []


def test_a_deep_metadata_filter_on_the_dashboard_jobs_page_shows_the_problem(client, auth, conn):
    app_id = conn.execute("SELECT id FROM apps WHERE name = 'billing'").fetchone()[0]
    response = client.get(f"/dashboard/apps/{app_id}/jobs", query_string={"metadata.a": "[" * 1000}, headers=auth)
    assert response.status_code == 200, response.data[:300]
    assert "MAILER_MAX_JSON_DEPTH" in response.text
