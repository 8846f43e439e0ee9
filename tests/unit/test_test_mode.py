"""Test mode's stand-in for Mailjet: its answers read by the Send API parser, its events shaped as Mailjet's."""

from __future__ import annotations

import json
from pathlib import Path

from mailer.mailjet import events, send, simulation

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DOMAIN = simulation.TEST_DOMAIN


def outgoing(custom_id: str, *to: str) -> send.OutgoingMessage:
    return send.OutgoingMessage(custom_id, {
        "from": {"email": "billing@example.com"}, "to": [{"email": address} for address in to],
        "cc": [{"email": "cc@example.org"}], "subject": "Hi", "html": '<a href="https://example.com/x">x</a>',
    })


def test_the_answer_is_mailjets_shape_and_a_rejected_address_fails_only_its_message() -> None:
    response = simulation.TestModeClient().send([
        outgoing("job-1", f"opened@{DOMAIN}", "ann@example.org"),
        outgoing("job-2", "bob@example.org", f"Rejected@{DOMAIN.upper()}"),
        outgoing("job-3", "cy@example.org"),
    ])

    assert response.status_code == 400  # one refused message makes Mailjet's answer a 400
    first, second, third = response.results
    assert first.accepted and third.accepted
    assert [(r.kind, r.position, r.email) for r in first.recipients] == [
        ("to", 0, f"opened@{DOMAIN}"), ("to", 1, "ann@example.org"), ("cc", 0, "cc@example.org")]
    ids = [r.message_id for r in first.recipients + third.recipients]
    assert all(2**53 < i < 2**63 for i in ids) and len(set(ids)) == len(ids)
    assert all(r.message_uuid for r in first.recipients)
    assert not second.accepted and not second.recipients
    assert second.error_code == "mj-0013"
    error = second.error_message or ""
    assert f"Rejected@{DOMAIN.upper()}" in error and "To[1].Email" in error


def test_every_magic_address_gives_the_events_of_its_scenario_as_mailjet_writes_them() -> None:
    sample = {event["event"]: set(event) for event in json.loads((FIXTURES / "webhook_v2.json").read_text())}
    addresses = [f"{local}@{DOMAIN}" for local in simulation.TEST_SCENARIOS] + ["ann@example.org"]
    message = outgoing("0b6f8f5e-2a8d-4a4e-9d38-6a7d1c1e3f00", *addresses)
    [result] = simulation.TestModeClient().send([message]).results

    steps = simulation.test_events(message, result.recipients, at=1_700_000_000)

    statuses: dict[str, list[str | None]] = {}
    for step in steps:
        for raw in step:
            assert set(raw) == sample[raw["event"]], raw["event"]  # the fields of Mailjet's own sample
            assert raw["CustomID"] == message.custom_id and raw["time"] == 1_700_000_000
            parsed = events.to_event(raw)
            assert parsed.message_id == next(r.message_id for r in result.recipients if r.email == raw["email"])
            statuses.setdefault(raw["email"], []).append(parsed.status)
    assert {email.split("@")[0]: found for email, found in statuses.items()} == {
        "delivered": ["delivered"], "opened": ["delivered", "opened"], "clicked": ["delivered", "opened", "clicked"],
        "bounced": ["bounced"], "deferred": ["deferred"], "blocked": ["blocked"], "spam": ["delivered", "spam"],
        "unsubscribed": ["delivered", "opened", "unsubscribed"], "ann": ["delivered"], "cc": ["delivered"],
    }
    click = next(raw for step in steps for raw in step if raw["event"] == "click")
    assert click["url"] == "https://example.com/x"
