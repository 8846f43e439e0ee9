"""Every answer of the app says X-Content-Type-Options: nosniff (gunicorn's own: tests/e2e/test_web_protocol.py)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/healthz", 200),
    ("GET", "/openapi.json", 200),
    ("GET", "/no-such-page", 404),
    ("POST", "/queue", 401),  # no key
    ("DELETE", "/healthz", 405),
    ("GET", "/dashboard/login", 200),
])
def test_every_answer_says_nosniff(client, method: str, path: str, status: int) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_an_accepted_message_says_nosniff(client, auth) -> None:
    message = {"from": {"email": "shop@example.com"}, "to": [{"email": "c@example.org"}], "subject": "S", "text": "T"}
    response = client.post("/queue", json=message, headers=auth)
    assert response.status_code == 202
    assert response.headers["X-Content-Type-Options"] == "nosniff"
