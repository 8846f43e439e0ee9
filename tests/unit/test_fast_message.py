"""POST /queue's fast path agrees with MessageSchema: the same result, or None (marshmallow decides)."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from marshmallow import ValidationError

from mailer.api import fast_message, schemas


def message(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from": {"email": "billing@example.com", "name": "Billing"},
        "to": [{"email": "ann@example.org", "name": "Ann"}],
        "subject": "Your invoice",
        "text": "Hello",
        "html": "<p>Hello</p>",
        "metadata": {"order_id": 1001, "tags": ["a", "b"], "nested": {"x": None}},
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not _DROP}


_DROP = object()
TEMPLATE_ID = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
PEOPLE = [{"email": f"p{i}@example.org"} for i in range(51)]

PLAIN = [
    message(),
    message(html=_DROP),
    message(text=_DROP),
    message(text=None),
    message(text=""),
    message(metadata=_DROP),
    message(metadata={}),
    message(priority="bulk"),
    message(priority="transactional"),
    message(cc=[{"email": "c@example.org"}], bcc=[{"email": "b@example.org", "name": None}]),
    message(cc=[], bcc=[]),
    message(reply_to={"email": "help@example.com"}),
    message(reply_to=None),
    message(to=PEOPLE[:50]),
    message(to=[{"email": "ann+tag@sub.example.co.uk"}]),
    message(to=[{"email": "user@localhost"}]),
    message(to=[{"email": "üser@exämple.org"}]),
    message(**{"from": {"email": "billing@example.com", "name": ""}}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID, "version": 3},
            variables={"name": "Ann", "items": [1, 2]}),
    message(subject=None, text=None, html=None, template={"id": TEMPLATE_ID.upper(), "version": None},
            variables=None),
    message(template=None, variables={"unused": True}),
]

INVALID_OR_OTHER = [
    message(**{"from": _DROP}),
    message(**{"from": None}),
    message(**{"from": "billing@example.com"}),
    message(**{"from": {"email": "billing"}}),
    message(**{"from": {"email": None}}),
    message(**{"from": {"name": "x"}}),
    message(**{"from": {"email": "billing@example.com", "name": "B\r"}}),
    message(**{"from": {"email": "billing@example.com", "name": 7}}),
    message(**{"from": {"email": "billing@example.com", "nick": "B"}}),
    message(to=_DROP),
    message(to=None),
    message(to=[]),
    message(to={"email": "ann@example.org"}),
    message(to=["ann@example.org"]),
    message(to=[{"email": "ann@"}]),
    message(to=[{"email": "a" * 250 + "@example.org"}]),
    message(to=[{"email": "ann@example.org", "name": "A" * 257}]),
    message(to=[{"email": "ann@example.org", "name": "Ann\nBcc: x@example.org"}]),
    message(to=PEOPLE),
    message(to=PEOPLE[:20], cc=PEOPLE[20:40], bcc=PEOPLE[40:]),
    message(cc=None),
    message(cc=[{"email": "not an address"}]),
    message(reply_to={"email": "x"}),
    message(reply_to="help@example.com"),
    message(subject=_DROP),
    message(subject=None),
    message(subject=""),
    message(subject="x" * 999),
    message(subject="Hi\nBcc: victim@example.org"),
    message(subject=42),
    message(text=_DROP, html=_DROP),
    message(text="", html=""),
    message(text=None, html=None),
    message(text=1),
    message(html=["x"]),
    message(metadata=None),
    message(metadata=[1, 2]),
    message(metadata={"blob": "x" * 5000}),
    message(priority=None),
    message(priority="urgent"),
    message(priority=1),
    message(importance="high"),
    message(template_id=5, text=_DROP, html=_DROP),
    message(template_id=None),
    message(variables=None),
    message(headers={"X-Order": "1"}),
    message(headers={}),
    message(headers={"X-MJ-MonitoringCategory": "x"}),
    message(headers={"x-mj-anything": "x"}),
    message(attachments=[]),
    message(send_at="2030-12-01T09:00:00+01:00"),
    message(send_at=None),
    "not an object",
    ["a", "list"],
    None,
    message(template={"id": TEMPLATE_ID}),  # with subject, text and html
    message(subject=_DROP, template={"id": TEMPLATE_ID}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID}, template_id=5),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": "not-a-uuid"}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": 5}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"version": 1}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID, "version": 0}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID, "version": True}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID, "version": 2.0}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID, "version": 2**31}),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID, "name": "x"}),
    message(subject=_DROP, text=_DROP, html=_DROP, template=TEMPLATE_ID),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID}, variables=[1]),
    message(subject=_DROP, text=_DROP, html=_DROP, template={"id": TEMPLATE_ID}, variables="x"),
    message(subject=_DROP, text=_DROP, html=_DROP),
]


def marshmallow(data: Any) -> dict[str, Any] | None:
    try:
        return schemas.MessageSchema().load(data)  # type: ignore[no-any-return]
    except ValidationError:
        return None


def agree(data: Any) -> None:
    fast = fast_message.load(copy.deepcopy(data))
    if fast is not None:
        assert fast == marshmallow(copy.deepcopy(data)), data
        assert list(fast) == list(marshmallow(copy.deepcopy(data)) or {}), "same keys in the same order"


@pytest.mark.parametrize("data", PLAIN)
def test_plain_messages_take_the_fast_path_and_load_the_same(data: Any) -> None:
    assert fast_message.load(copy.deepcopy(data)) is not None
    agree(data)


@pytest.mark.parametrize("data", INVALID_OR_OTHER)
def test_anything_else_is_left_to_marshmallow_or_loads_the_same(data: Any) -> None:
    agree(data)
    if marshmallow(copy.deepcopy(data)) is None:
        assert fast_message.load(copy.deepcopy(data)) is None


_ODD_VALUES: list[Any] = [
    None, "", " ", "x", "a\r\nb", "ann@example.org", "@", 0, 1, -1, 1.5, True, False, [], {}, [1],
    {"email": "z@example.org"}, [{"email": "z@example.org"}], "x" * 1000, "transactional", "bulk",
]


def _mutate(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        targets: list[tuple[Any, Any]] = [(data, key) for key in data]
        for key in ("from", "reply_to"):
            if isinstance(data.get(key), dict):
                targets += [(data[key], k) for k in data[key]]
        for key in ("to", "cc", "bcc"):
            if isinstance(data.get(key), list):
                targets += [(data[key], i) for i in range(len(data[key]))]
                targets += [(item, k) for item in data[key] if isinstance(item, dict) for k in item]
        action = rng.random()
        if action < 0.15:
            data[rng.choice([*fast_message.HANDLED, "other"])] = rng.choice(_ODD_VALUES)
        elif targets:
            container, key = rng.choice(targets)
            if action < 0.3 and isinstance(container, dict):
                del container[key]
            else:
                container[key] = rng.choice(_ODD_VALUES)
    return data


def test_randomly_mutated_messages_agree() -> None:
    rng = random.Random(20261122)  # noqa: S311  # reproducible test data, not security
    for _ in range(5000):
        agree(_mutate(rng.choice(PLAIN), rng))


@pytest.mark.parametrize("name", ["X-MJ-MonitoringCategory", "x-mj-monitoringcategory", "X-Mj-Future-Header",
                                  "X-MJ-CustomID"])
def test_every_x_mj_header_is_refused_by_both_loaders(name: str) -> None:
    data = message(headers={name: "x"})
    assert fast_message.load(copy.deepcopy(data)) is None
    with pytest.raises(ValidationError) as refused:
        schemas.MessageSchema().load(copy.deepcopy(data))
    assert name in str(refused.value.messages["headers"])


def test_other_headers_still_pass() -> None:
    loaded = schemas.MessageSchema().load(message(headers={"X-Order": "1", "X-Mailer-Tag": "a", "X-MJX": "b"}))
    assert loaded["headers"] == {"X-Order": "1", "X-Mailer-Tag": "a", "X-MJX": "b"}


def test_every_schema_field_is_known_to_the_fast_path() -> None:
    # A field added to MessageSchema must be handled here (or at least sent to marshmallow).
    assert tuple(schemas.MessageSchema().fields) == fast_message.KNOWN_FIELDS


def test_a_batch_loads_the_same_or_not_at_all() -> None:
    batch = {"messages": [copy.deepcopy(m) for m in PLAIN]}
    assert fast_message.load_batch(copy.deepcopy(batch)) == schemas.BatchSchema().load(copy.deepcopy(batch))
    assert fast_message.load_batch({"messages": [*PLAIN, message(to=[])]}) is None
    assert fast_message.load_batch({"messages": []}) is None
    assert fast_message.load_batch({"messages": [message()] * 501}) is None
    assert fast_message.load_batch({"messages": [message()], "dry_run": True}) is None
    assert fast_message.load_batch({"messages": "nope"}) is None
