"""The /queue request schemas, without a database: what loads, and what each rule refuses."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from marshmallow import ValidationError

from mailer.api import schemas
from mailer.domain import message as rules


def message(**extra: object) -> dict:
    return {"from": {"email": "billing@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Invoice",
            "text": "hi", **extra}


def errors_of(data: object, schema: type = schemas.MessageSchema) -> dict:
    with pytest.raises(ValidationError) as caught:
        schema().load(data)
    return caught.value.messages  # type: ignore[return-value]


def test_a_minimal_message_loads_with_defaults():
    loaded = schemas.MessageSchema().load(message())
    assert loaded == {
        "from_": {"email": "billing@example.com", "name": None},
        "to": [{"email": "ann@example.org", "name": None}],
        "cc": [],
        "bcc": [],
        "reply_to": None,
        "subject": "Invoice",
        "text": "hi",
        "html": None,
        "template_id": None,
        "variables": None,
        "template": None,
        "attachments": [],
        "headers": {},
        "metadata": {},
        "priority": "transactional",
        "send_at": None,
    }


def test_a_full_message_loads():
    pdf = base64.b64encode(b"%PDF-1.4 ...").decode()
    loaded = schemas.MessageSchema().load(message(
        **{"from": {"email": "billing@example.com", "name": "Billing"}},
        to=[{"email": "ann@example.org", "name": "Ann"}],
        cc=[{"email": "cy@example.org"}],
        bcc=[{"email": "dee@example.org"}],
        reply_to={"email": "support@example.com"},
        html="<p>hi</p>",
        template_id=123,
        variables={"name": "Ann"},
        attachments=[{"filename": "a.pdf", "content_type": "application/pdf", "content": pdf}],
        headers={"X-Order": "1001", "List-Unsubscribe": "<mailto:u@example.com>"},
        metadata={"order_id": 1001},
        priority="bulk",
        send_at="2026-12-01T09:00:00+01:00",
    ))
    assert loaded["send_at"] == dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    assert loaded["send_at"].utcoffset() == dt.timedelta(hours=1)
    assert loaded["template_id"] == 123
    assert loaded["headers"] == {"X-Order": "1001", "List-Unsubscribe": "<mailto:u@example.com>"}
    assert loaded["from_"] == {"email": "billing@example.com", "name": "Billing"}


@pytest.mark.parametrize("body", [message(text=None, html="<p>x</p>"), message(text=None, template_id=5)],
                         ids=["html only", "template only"])
def test_html_or_a_template_can_replace_text(body):
    schemas.MessageSchema().load(body)


def test_fifty_recipients_in_all_load():
    people = [{"email": f"p{i}@example.org"} for i in range(rules.MAX_RECIPIENTS)]
    schemas.MessageSchema().load(message(to=people[:1], cc=people[1:25], bcc=people[25:]))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in message().items() if k != "from"}, "from"),
        ({k: v for k, v in message().items() if k != "to"}, "to"),
        ({k: v for k, v in message().items() if k != "subject"}, "subject"),
        (message(text=None), "text"),
        (message(text="", html=""), "text"),
        (message(to=[]), "to"),
        (message(to=[{"email": "nope"}]), "to"),
        (message(to=[{"name": "Ann"}]), "to"),
        (message(reply_to={"email": "nope"}), "reply_to"),
        (message(to=[{"email": "a@" + "x" * 250 + ".org"}]), "to"),
        (message(subject="a\rb"), "subject"),
        (message(subject="a\nb"), "subject"),
        (message(subject="x" * 999), "subject"),
        (message(to=[{"email": "ann@example.org", "name": "A\r\nBcc: x@example.org"}]), "to"),
        (message(headers={"X-A": "1\n2"}), "headers"),
        (message(headers={"X-A": "x" * 999}), "headers"),
        (message(headers={"Reply-To": "x@example.com"}), "headers"),
        (message(headers={"x-mj-customid": "other"}), "headers"),
        (message(headers={"Bad Name": "1"}), "headers"),
        (message(headers={"X-Name\n": "1"}), "headers"),
        (message(headers={"x" * 101: "1"}), "headers"),
        (message(attachments=[{"filename": "a", "content_type": "text/plain", "content": "abc"}]), "attachments"),
        (message(attachments=[{"filename": "a\n", "content_type": "text/plain", "content": "aGk="}]), "attachments"),
        (message(attachments=[{"filename": "a", "content_type": "text", "content": "aGk="}]), "attachments"),
        (message(attachments=[{"filename": "a", "content_type": "text/plain\n", "content": "aGk="}]), "attachments"),
        (message(template_id="1"), "template_id"),
        (message(template_id=True), "template_id"),
        (message(template_id=-1), "template_id"),
        (message(variables=[1]), "variables"),
        (message(priority="urgent"), "priority"),
        (message(priority="Bulk"), "priority"),
        (message(metadata={"x": "y" * rules.MAX_METADATA_BYTES}), "metadata"),
        (message(metadata="x"), "metadata"),
        (message(send_at="2026-12-01T09:00:00"), "send_at"),
        (message(send_at="2026-12-01"), "send_at"),
        (message(send_at="9999-12-31T23:00:00-02:00"), "send_at"),
        (message(send_at=1764576000), "send_at"),
        (message(extra=1), "extra"),
    ],
)
def test_each_rule_rejects(body, field):
    assert field in errors_of(body)


@pytest.mark.parametrize("name", sorted(rules.FORBIDDEN_HEADERS))
def test_every_forbidden_header_is_refused_in_any_case(name):
    for spelling in (name, name.upper(), name.title()):
        assert "headers" in errors_of(message(headers={spelling: "x"}))


def test_recipients_are_counted_across_to_cc_and_bcc():
    people = [{"email": f"p{i}@example.org"} for i in range(rules.MAX_RECIPIENTS + 1)]
    assert "to" in errors_of(message(to=people[:1], cc=people[1:2], bcc=people[2:]))


def test_attachments_have_a_total_size_limit(monkeypatch):
    monkeypatch.setattr(rules, "MAX_ATTACHMENTS_BYTES", 10)
    content = base64.b64encode(b"x" * 9).decode()
    attachment = {"filename": "a.txt", "content_type": "text/plain", "content": content}
    schemas.MessageSchema().load(message(attachments=[attachment]))
    assert "attachments" in errors_of(message(attachments=[attachment, attachment]))


def test_a_batch_loads_in_order():
    loaded = schemas.BatchSchema().load({"messages": [message(subject="a"), message(subject="b")]})
    assert [m["subject"] for m in loaded["messages"]] == ["a", "b"]


@pytest.mark.parametrize("messages", [[], [message()] * (rules.MAX_BATCH + 1), None, message()])
def test_a_batch_must_be_a_list_of_1_to_500_messages(messages):
    assert "messages" in errors_of({"messages": messages}, schemas.BatchSchema)


def test_a_batch_error_names_the_bad_index():
    batch = [message(), message(), message(), message(to=[]), message()]
    assert list(errors_of({"messages": batch}, schemas.BatchSchema)["messages"]) == [3]


def test_a_batch_refuses_unknown_fields():
    assert "extra" in errors_of({"messages": [message()], "extra": 1}, schemas.BatchSchema)


@pytest.mark.parametrize("data", [[message()], "x", 1, None])
def test_a_message_must_be_an_object(data):
    assert errors_of(data)
