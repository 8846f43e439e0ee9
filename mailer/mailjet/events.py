"""Mailjet Event API parser: webhook bodies to normalized events."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mailer.domain import json_depth

# Mailjet event name -> our recipient status, as django-anymail normalizes them.
# https://dev.mailjet.com/email/guides/webhooks/
EVENT_STATUS = {
    "sent": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "blocked": "blocked",
    "spam": "spam",
    "unsub": "unsubscribed",
}
SOFT_BOUNCE_STATUS = "deferred"
# Events after which the address must not be mailed again (a hard bounce only, among bounces).
SUPPRESSING_EVENTS = frozenset({"blocked", "spam", "unsub"})
# Our CustomID is a job id (36 characters). A longer one is not ours and could not even be indexed
# (a btree entry holds at most about 2.7 kB): it stays in the payload only.
MAX_CUSTOM_ID = 255
# An event's `time` is kept when it lies this far before or after its arrival, else the arrival stands in:
# mailjet_events is partitioned by that time (migration 0029), and the month before this one always has a
# partition. Mailjet posts within seconds and retries for at most a day, so real events are always inside.
PLAUSIBLE_PAST = timedelta(days=28)
PLAUSIBLE_FUTURE = timedelta(days=1)
# What parse_events allows unless told otherwise (the web passes MAILER_MAX_JSON_DEPTH).
DEFAULT_MAX_DEPTH = 32


class MalformedEvents(ValueError):
    """The body is not JSON, or not an object or an array of objects."""


@dataclass(frozen=True)
class MailjetEvent:
    """One Mailjet tracking event, normalized."""

    status: str | None
    name: str
    at: datetime
    message_id: int | None
    custom_id: str | None
    email: str | None
    hard_bounce: bool
    suppresses: bool
    fingerprint: str
    raw: dict
    dated: bool = True  # `at` is the event's own time; False: its arrival stands in (no usable `time`)


def fingerprint(raw: dict) -> str:
    """The dedup key of a raw event: sha256 of its canonical JSON."""
    # Events carry no id and Mailjet retries resend whole batches, so the content is the key.
    # https://dev.mailjet.com/email/guides/webhooks/
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _timestamp(value: Any, now: datetime) -> datetime | None:
    """The event's own time when it is usable and plausible at `now`, else None."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            at = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
        if now - PLAUSIBLE_PAST <= at <= now + PLAUSIBLE_FUTURE:
            return at
    return None


def _message_id(value: Any) -> int | None:
    # MessageID is above 2**53: a float has already lost digits, so only ints and digit strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value) or None


def _custom_id(value: Any) -> str | None:
    text = _text(value)
    return text if text is not None and len(text) <= MAX_CUSTOM_ID else None


def _is_true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True or (isinstance(value, int) and value == 1)


def to_event(raw: dict, now: datetime | None = None) -> MailjetEvent:
    """Normalize one raw event object (arrived at `now`, by default the present); every field is optional."""
    name = raw.get("event")
    name = name if isinstance(name, str) else ""
    key = name.strip().lower()
    status = EVENT_STATUS.get(key)
    hard_bounce = key == "bounce" and _is_true(raw.get("hard_bounce"))
    if key == "bounce" and not hard_bounce:
        # A soft bounce (greylisting, full mailbox): Mailjet retries delivery itself.
        # https://dev.mailjet.com/email/guides/webhooks/
        status = SOFT_BOUNCE_STATUS
    arrived = now or datetime.now(UTC)
    at = _timestamp(raw.get("time"), arrived)
    return MailjetEvent(
        status=status,
        name=name,
        at=at or arrived,
        message_id=_message_id(raw.get("MessageID")),
        custom_id=_custom_id(raw.get("CustomID")),
        email=(_text(raw.get("email")) or "").strip() or None,
        hard_bounce=hard_bounce,
        suppresses=hard_bounce or key in SUPPRESSING_EVENTS,
        fingerprint=fingerprint(raw),
        raw=raw,
        dated=at is not None,
    )


def parse_events(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH, now: datetime | None = None) -> list[MailjetEvent]:
    """Parse a webhook body: one bare object (version 1) or an array of objects (version 2)."""
    arrived = now or datetime.now(UTC)
    return [to_event(item, arrived) for item in parse_raw(body, max_depth)]


def _huge_int(text: str) -> int | float:
    # Python refuses to read an integer of more than 4,300 digits (CVE-2020-10735); as a float it is
    # infinite, which tracking stores as null, like any other number Postgres cannot hold.
    try:
        return int(text)
    except ValueError:
        return float(text)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        if "integer string conversion" not in str(exc) and "Exceeds the limit" not in str(exc):
            raise
    # Valid JSON with a huge integer: still events, still a 200 (Mailjet retries anything else for a day).
    return json.loads(body, parse_int=_huge_int)


def parse_raw(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[dict]:
    """The raw event objects of a webhook body, not yet normalized (MalformedEvents when it has none)."""
    try:
        data = _loads(body)
        json_depth.check(body, data, max_depth)
    except (json_depth.TooDeep, RecursionError):  # RecursionError: deeper than Python's limit, so than ours
        raise MalformedEvents(f"body nests deeper than {max_depth} levels ({json_depth.VARIABLE})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvents(f"body is not JSON: {str(exc)[:200]}") from None
    # Grouped callbacks (version 2) post an array, ungrouped ones a single object.
    # https://dev.mailjet.com/email/guides/webhooks/
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise MalformedEvents(f"expected an object or an array, got {type(data).__name__}")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise MalformedEvents(f"element {index} is {type(item).__name__}, not an object")
    return data
