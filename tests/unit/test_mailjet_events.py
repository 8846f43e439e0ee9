"""Tests for the Mailjet Event API parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.mailjet import events

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode()


# When the fixtures' events arrived (their `time` is plausible then).
ARRIVED = datetime.fromtimestamp(1755500200, tz=UTC)


def test_grouped_fixture_parses_every_event_type() -> None:
    parsed = events.parse_events((FIXTURES / "webhook_v2.json").read_bytes(), now=ARRIVED)
    assert [e.name for e in parsed] == [
        "sent", "open", "click", "bounce", "spam", "blocked", "unsub"]
    assert [e.status for e in parsed] == [
        "delivered", "opened", "clicked", "bounced", "spam", "blocked", "unsubscribed"]
    assert [e.suppresses for e in parsed] == [False, False, False, True, True, True, True]
    assert parsed[0].message_id == 288230379609003794
    assert type(parsed[0].message_id) is int
    assert [e.message_id for e in parsed[3:6]] == [
        288230379609003796, 288230379609003795, 288230379609003797]
    assert parsed[3].hard_bounce is True
    assert parsed[0].at == datetime.fromtimestamp(1755500001, tz=UTC)
    assert parsed[0].custom_id == "order-1001"
    assert parsed[5].email == "old-bouncer@example.com"
    assert parsed[1].raw["ip"] == "203.0.113.7"


def test_single_object_is_accepted() -> None:
    parsed = events.parse_events(_body({"event": "open", "MessageID": 5, "email": "a@b.co"}))
    assert len(parsed) == 1
    assert parsed[0].status == "opened"
    assert parsed[0].email == "a@b.co"


def test_soft_bounce_is_deferred_and_not_suppressing() -> None:
    (event,) = events.parse_events(_body({"event": "bounce", "hard_bounce": False,
                                          "error": "greylisted", "MessageID": 1}))
    assert event.status == "deferred"
    assert event.hard_bounce is False
    assert event.suppresses is False


def test_unknown_event_name_is_kept_without_status() -> None:
    (event,) = events.parse_events(_body({"event": "teleported", "MessageID": 7}))
    assert event.status is None
    assert event.name == "teleported"
    assert event.message_id == 7
    assert event.suppresses is False


def test_every_field_is_optional() -> None:
    before = datetime.now(UTC)
    (event,) = events.parse_events(b"{}")
    assert (event.name, event.status, event.message_id, event.custom_id, event.email) == (
        "", None, None, None, None)
    assert event.at.tzinfo is not None
    assert event.at >= before


def test_field_coercions() -> None:
    (numeric, floaty, empty) = events.parse_events(_body([
        {"event": "sent", "MessageID": "288230379609003794", "time": "1755500001"},
        {"event": "sent", "MessageID": 1.5, "time": "soon"},
        {"event": "sent", "CustomID": "", "email": ""},
    ]), now=ARRIVED)
    assert numeric.message_id == 288230379609003794
    assert numeric.at == datetime.fromtimestamp(1755500001, tz=UTC)
    assert floaty.message_id is None
    assert floaty.at.tzinfo is not None
    assert empty.custom_id is None
    assert empty.email is None


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe\x00", b"42", b'"sent"', b"null",
                                  b'[{"event": "sent"}, 3]', b'[[]]'])
def test_malformed_bodies_raise(body: bytes) -> None:
    with pytest.raises(events.MalformedEvents):
        events.parse_events(body)


def test_empty_array_is_no_events() -> None:
    assert events.parse_events(b"[]") == []


def test_fingerprint_is_stable_and_distinct() -> None:
    raw = {"event": "open", "time": 1755500061, "MessageID": 288230379609003794, "ip": "x"}
    reordered = dict(reversed(list(raw.items())))
    later = {**raw, "time": 1755500062}
    first, again, other = events.parse_events(_body([raw, reordered, later]))
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != other.fingerprint
    assert len(first.fingerprint) == 64
    # The same event, grouped or not, dedups to the same key.
    (single,) = events.parse_events(_body(raw))
    assert single.fingerprint == first.fingerprint


@pytest.mark.parametrize("time", [ARRIVED - events.PLAUSIBLE_PAST - timedelta(seconds=1),
                                  ARRIVED + events.PLAUSIBLE_FUTURE + timedelta(seconds=1)])
def test_an_implausible_time_gives_way_to_the_arrival(time: datetime) -> None:
    """mailjet_events is partitioned by the time: one far away would have no month to land in."""
    (event,) = events.parse_events(_body({"event": "open", "time": time.timestamp()}), now=ARRIVED)
    assert event.at == ARRIVED


def test_a_plausible_time_is_kept_and_the_same_for_every_retry() -> None:
    """The dedupe key (fingerprint, occurred_at) is a function of the raw event alone."""
    raw = {"event": "open", "time": int(ARRIVED.timestamp()) - 3600, "MessageID": 5}
    first = events.to_event(raw, ARRIVED)
    retried = events.to_event(raw, ARRIVED + timedelta(hours=24))  # Mailjet retries for at most a day
    assert (first.fingerprint, first.at) == (retried.fingerprint, retried.at)
    assert first.at == datetime.fromtimestamp(raw["time"], tz=UTC)
