"""GET and POST /unsubscribe/{token}: the one-click unsubscribe link of bulk mail (RFC 8058); no API key."""

from __future__ import annotations

import html

import flask

from mailer import db
from mailer.api import apidoc, responses
from mailer.services import unsubscribe

bp = flask.Blueprint("unsubscribe", __name__)

# The page needs no script, no image and no other origin: forms back to us only (as the dashboard's CSP).
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str) -> flask.Response:
    response = flask.Response(_PAGE.format(title=title, body=body), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/unsubscribe/<token>")
@apidoc.operation(responses={200: apidoc.Content("text/html")}, auth="none", errors=(404,))
def confirm_page(token: str) -> flask.Response:
    """A page with one button that unsubscribes (a link prefetcher's GET changes nothing)."""
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        email = unsubscribe.address_of(conn, token)
    # No action: the form posts to the page's own URL, which is right behind a proxy that adds a path prefix
    # (MAILER_PUBLIC_URL may have one), where a URL built here would lack it.
    return _page("Unsubscribe", (
        f"<p>Stop bulk mail (newsletters, announcements) to <strong>{html.escape(email)}</strong>? "
        "Messages you need, such as receipts and password resets, still come.</p>"
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    ))


@bp.post("/unsubscribe/<token>")
@apidoc.operation(
    responses={200: responses.UnsubscribedSchema}, auth="none", errors=(404, 429),
    description="The body is RFC 8058's `List-Unsubscribe=One-Click` (application/x-www-form-urlencoded), or "
    "empty; it is not otherwise read. A browser (Accept: text/html) gets a confirmation page instead of JSON. "
    "The address is suppressed with scope `bulk` (source `unsubscribe`), and the message's first To recipient of "
    "that address moves to `unsubscribed` (in /status and GET /activity) when it was sent and ranks below it "
    "(a `pending`, `spam`, `failed` or `suppressed` one stays). `email.unsubscribed` goes to the app's webhooks "
    "once per message's recipient a link unsubscribes (when none moves, once if the address was not on the list): "
    "another message's link for the same address fires it again; a repeat of the same link fires none. "
    "Rate-limited per client address "
    "(MAILER_UNSUBSCRIBES_PER_ADDRESS_PER_MIN) "
    "and in all (MAILER_UNSUBSCRIBES_PER_MIN).",
)
def one_click(token: str) -> flask.Response:
    """Suppress the address for the app's bulk mail (the RFC 8058 body, or none); idempotent."""
    with db.autocommit(flask.current_app.extensions["mailer.pool"]) as conn:
        unsubscribe.limit(conn, flask.current_app.extensions["mailer.settings"], flask.request.remote_addr or "unknown")
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        done = unsubscribe.unsubscribe(conn, token)
    if flask.request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        return _page("Unsubscribed", f"<p><strong>{html.escape(done['email'])}</strong> gets no more bulk mail "
                                     "from this sender.</p>")
    return flask.jsonify(done)
