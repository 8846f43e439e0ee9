"""Stored templates with real processes: what the preview shows is what the worker hands to Mailjet."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.conftest import System, wait_until

pytestmark = pytest.mark.e2e

TEMPLATE = {
    "name": "welcome",
    "subject": "Welcome, {{ name }}",
    "html": "<h1>Hi {{ name }}</h1>{% for step in steps %}<p>{{ loop.index }}. {{ step }}</p>{% endfor %}",
    "text": "Hi {{ name }}: {{ steps | join(', ') }}",
    "variables": {"type": "object", "required": ["name", "steps"],
                  "properties": {"name": {"type": "string"}, "steps": {"type": "array", "items": {"type": "string"}}}},
}


def test_the_preview_is_what_mailjet_receives(system: System) -> None:
    web, auth = system.web_url, system.auth
    created = requests.post(f"{web}/templates", json=TEMPLATE, headers=auth, timeout=5)
    assert created.status_code == 201, created.text
    template = {"id": created.json()["id"]}
    people = [{"name": "Ann <admin>", "steps": ["verify", "log in"]}, {"name": "Bob & Co", "steps": []}]
    previews = [
        requests.post(f"{web}/templates/{template['id']}/render", json={"variables": variables}, headers=auth,
                      timeout=5).json()
        for variables in people
    ]
    batch = {"messages": [
        {"from": {"email": "shop@example.com"}, "to": [{"email": f"p{n}@example.org"}], "template": template,
         "variables": variables}
        for n, variables in enumerate(people)
    ]}
    accepted = requests.post(f"{web}/queue", json=batch, headers=auth, timeout=5)
    assert accepted.status_code == 202, accepted.text
    job_ids = [job["id"] for job in accepted.json()["jobs"]]

    def sent() -> dict[str, dict]:
        messages = requests.get(f"{system.simulator_url}/_sim/sends", params={"payloads": 1}, timeout=5).json()
        return {m["custom_id"]: m["payload"] for m in messages["messages"] if m["custom_id"] in job_ids}

    payloads = wait_until(lambda: len(found := sent()) == 2 and found, timeout=20, message="both sent")
    for job_id, preview in zip(job_ids, previews, strict=True):
        payload = payloads[job_id]
        assert (payload["Subject"], payload["HTMLPart"], payload["TextPart"]) == (
            preview["subject"], preview["html"], preview["text"]
        )
        status = requests.get(f"{web}/status/{job_id}", headers=auth, timeout=5).json()
        assert status["template"] == {"id": template["id"], "version": 1}
    assert previews[0]["html"] == "<h1>Hi Ann &lt;admin&gt;</h1><p>1. verify</p><p>2. log in</p>"
    assert previews[1]["subject"] == "Welcome, Bob & Co"
