"""POST /events: Mailjet's Event API callback."""

from __future__ import annotations

import base64
import binascii
import hmac

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
    raw = flask.request.get_data(cache=True)
    # Postgres cannot store U+0000; an event carrying one must still be kept, not retried forever.
    raw = raw.replace(b"\\u0000", b"\\ufffd")
    try:
        parsed = mailjet_events.parse_events(raw)
    except (mailjet_events.MalformedEvents, RecursionError) as exc:  # RecursionError: nested too deep
        raise errors.MalformedRequest(f"not a Mailjet event payload: {exc}") from None
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        recorded = tracking.record_events(conn, parsed)
    metrics.events_received(event.name for event in parsed)
    return flask.jsonify({"received": recorded.received, "new": recorded.new, "matched": recorded.matched})
