"""POST /events: Mailjet's Event API callback."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

import flask

from mailer import db, metrics
from mailer.api import apidoc, responses
from mailer.domain import errors
from mailer.mailjet import events as mailjet_events
from mailer.services import tracking

bp = flask.Blueprint("events", __name__)


def _check_basic_auth() -> None:
    # Mailjet signs nothing: basic auth over HTTPS is the protection.
    # https://dev.mailjet.com/email/guides/webhooks/#event-api-security
    expected = flask.current_app.extensions["mailer.settings"].events_auth
    scheme, _, encoded = flask.request.headers.get("Authorization", "").partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True) if scheme.lower() == "basic" else b""
    except (binascii.Error, ValueError):
        given = b""
    if expected is None or not hmac.compare_digest(given, expected.encode()):
        raise errors.Unauthorized("Mailjet must send the basic-auth credentials of MAILER_EVENTS_AUTH")


@bp.post("/events")
@apidoc.operation(
    auth="basic",
    body={"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
          "description": "Mailjet Event API: one event object, or an array of them (grouped events)"},
    responses={200: responses.EventsAnswerSchema},
)
def receive_events() -> flask.Response:
    """Store Mailjet events (one object or a grouped array); 200 for anything parsed."""
    _check_basic_auth()
    settings = flask.current_app.extensions["mailer.settings"]
    raw = flask.request.get_data(cache=False)  # not kept on the request: freed once parsed
    # Postgres cannot store U+0000; an event carrying one must still be kept, not retried forever.
    raw = raw.replace(b"\\u0000", b"\\ufffd")
    try:
        items: list[Any] = mailjet_events.parse_raw(raw, settings.max_json_depth)
    except mailjet_events.MalformedEvents as exc:
        raise errors.MalformedRequest(f"not a Mailjet event payload: {exc}") from None
    del raw
    received = new = matched = 0
    # One transaction per chunk: a huge grouped POST holds no long transaction and normalizes one chunk at a
    # time. When a later chunk fails (503), Mailjet resends the whole POST and the committed chunks' events
    # are duplicates, kept once. A chunk is one statement (services/tracking.py), so autocommit: no BEGIN and
    # COMMIT round trips around it.
    for start in range(0, len(items), settings.events_chunk_size):
        chunk = items[start : start + settings.events_chunk_size]
        parsed = [mailjet_events.to_event(item) for item in chunk]
        with db.autocommit(flask.current_app.extensions["mailer.pool"]) as conn:
            recorded = tracking.record_events(conn, parsed)
        received, new, matched = received + recorded.received, new + recorded.new, matched + recorded.matched
        metrics.events_received(event.name for event in parsed)
        items[start : start + len(chunk)] = [None] * len(chunk)  # let the chunk's objects go
    return flask.jsonify({"received": received, "new": new, "matched": matched})
