"""/dashboard's activity page (an app's recipient status changes, newest first) and the replay-by-window form.

The routes are added to the dashboard's blueprint (views.bp): its login guard, CSRF check, headers and error pages
apply.
"""

from __future__ import annotations

import uuid
from typing import Any

import flask
from flask.typing import ResponseReturnValue

from mailer import db
from mailer.api import reads, replay_schemas
from mailer.api.activity import TYPES_MAX_LENGTH
from mailer.config import Settings
from mailer.dashboard import views
from mailer.domain import activity as rules
from mailer.domain import errors
from mailer.domain.webhooks import EVENT_NAMES
from mailer.services import activity, webhook_replays

bp = views.bp
ACTIVITY_PER_PAGE = 50
# A page reads at most this many changes, whichever their type: a filter on a rare type costs a bounded read and
# the page offers "older" to go on (GET /activity's own bound is its limit, 1000).
ACTIVITY_SCAN_ROWS = 5000


def _settings() -> Settings:
    return flask.current_app.extensions["mailer.settings"]  # type: ignore[no-any-return]


@bp.get("/apps/<int:app_id>/activity")
def activity_page(app_id: int) -> str:
    """The app's recipient status changes, newest first, a page at a time; `types` filters as GET /activity's."""
    views._app(app_id)
    args = flask.request.args
    given = {key: args.get(key, "").strip() for key in ("types", "before") if args.get(key, "").strip()}
    problems: dict[str, Any] = {}
    types, before = None, None
    if "types" in given:
        try:
            if len(given["types"]) > TYPES_MAX_LENGTH:
                raise ValueError(f"is longer than {TYPES_MAX_LENGTH} characters")
            types = rules.parse_types(given["types"])
        except ValueError as exc:
            problems["types"] = [str(exc)]
    if "before" in given:
        try:
            before = rules.decode_cursor(given["before"])
        except ValueError:
            problems["before"] = ["is not a position from this page"]
    if problems:
        types, before, given = None, None, {}
    # The type box shows what was asked, a list of several included (its own option), so Filter keeps it.
    chosen = ",".join(rules.TYPE_PREFIX + t for t in types) if types else ""
    page = reads.listing(lambda conn: activity.recent_page(
        conn, app_id=app_id, before=before, types=types, limit=ACTIVITY_PER_PAGE, scan_limit=ACTIVITY_SCAN_ROWS))
    older = views._link(".activity_page", app_id, {**given, "before": page["older"]}) if page["older"] else None
    return views._render(
        "activity.html", app_id, page=page, filters=given, problems=problems, types=EVENT_NAMES, older=older,
        chosen=chosen,
        first=views._link(".activity_page", app_id, {k: v for k, v in given.items() if k != "before"}),
    )


@bp.post("/apps/<int:app_id>/webhooks/<endpoint_id>/replay")
def replay_window(app_id: int, endpoint_id: str) -> ResponseReturnValue:
    """Start a replay by window, as POST /webhooks/{id}/replay does (same validation and limits); back to the
    webhooks page, or the page again with the form as sent and what was wrong with it."""
    views._app(app_id)
    try:
        parsed = uuid.UUID(endpoint_id)
    except ValueError:
        raise errors.NotFound(f"no webhook {endpoint_id}") from None
    form = flask.request.form
    sent = {"since": form.get("since", "").strip(), "until": form.get("until", "").strip(),
            "types": [t for t in form.getlist("types") if t.strip()]}
    data: dict[str, Any] = {"since": sent["since"], "until": sent["until"]}
    if sent["types"]:
        data["types"] = sent["types"]
    try:
        loaded = views._load_or_raise(replay_schemas.ReplaySchema(), data)
        with db.connection(views._pool()) as conn:
            started = webhook_replays.start(
                conn, app_id=app_id, endpoint_id=parsed, since=loaded["since"], until=loaded["until"],
                types=loaded["types"], settings=_settings(),
            )
    except (errors.ValidationFailed, errors.Conflict) as exc:
        failure = {"endpoint_id": str(parsed), "message": exc.message, "details": exc.details or {}, "form": sent}
        return views.webhooks_page(app_id, replay_failure=failure), exc.http_status
    flask.flash(
        f"Replay {started['id']} started: {started['queued']} events of {started['since']} to {started['until']} "
        "will be delivered again, in the background.", "ok",
    )
    return flask.redirect(flask.url_for(".webhook_list", app_id=app_id) + f"#endpoint-{parsed}")
