"""/dashboard: server-rendered pages over the same services as the API."""

from __future__ import annotations

import datetime as dt
import urllib.parse
import uuid
from typing import Any

import flask
import psycopg
from flask.typing import ResponseReturnValue
from marshmallow import Schema, ValidationError

from mailer import db
from mailer.api import reads, schemas
from mailer.api.errors import details_from_marshmallow
from mailer.dashboard import access, chart
from mailer.domain import errors, statuses
from mailer.domain.webhooks import EVENT_NAMES
from mailer.services import dashboard, logs, status, suppressions, webhook_replays, webhooks

bp = flask.Blueprint("dashboard", __name__, url_prefix="/dashboard")

PUBLIC_ENDPOINTS = frozenset({"dashboard.login_form", "dashboard.login"})
RECENT_DELIVERIES = 10
RECENT_REPLAYS = 5
REFRESH_S = 3
# Only what the pages themselves need: no scripts at all, styles inline, forms back to us.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def _pool() -> Any:
    return flask.current_app.extensions["mailer.pool"]


def _principal() -> access.Principal:
    principal = access.current()
    if principal is None:
        raise errors.Unauthorized("log in first")
    return principal


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    if flask.request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if access.current() is None:
        if flask.request.method == "GET":
            return flask.redirect(flask.url_for(".login_form", next=flask.request.full_path.rstrip("?")))
        raise errors.Unauthorized("log in first")
    if flask.request.method == "POST":
        access.check_csrf()
    return None


@bp.after_request
def _headers(response: flask.Response) -> flask.Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.errorhandler(errors.MailerError)
def _error(error: errors.MailerError) -> ResponseReturnValue:
    browser = access.bearer_token() is None and flask.request.method == "GET"
    if isinstance(error, errors.Unauthorized) and browser:
        return flask.redirect(flask.url_for(".login_form"))
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, errors.RateLimited) else {}
    return flask.render_template("dashboard/error.html", error=error), error.http_status, headers


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"csrf_token": access.csrf_token, "csrf_field": access.CSRF_FIELD}


def _render(template: str, app_id: int | None = None, **context: Any) -> str:
    principal = access.current()
    name, test = None, False
    if app_id is not None:
        with db.connection(_pool()) as conn:
            app = dashboard.find_app(conn, app_id=app_id)
        name, test = app.name, app.test
    return flask.render_template(
        f"dashboard/{template}", principal=principal, app_id=app_id, app_name=name, app_test=test, **context
    )


def _app(app_id: int) -> int:
    """The app of a URL, once the principal may see it (404 otherwise)."""
    _principal().require_app(app_id)
    return app_id


def _safe_next(target: str | None) -> str:
    """Where to go after the login: a dashboard page of ours, never another site."""
    if target and target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target:
        return target
    return flask.url_for(".index")


# --- login ------------------------------------------------------------------------------------


@bp.get("/login")
def login_form() -> str:
    """The login form: the operator token or an app key."""
    return _render("login.html", next=flask.request.args.get("next", ""), failed=False)


@bp.post("/login")
def login() -> ResponseReturnValue:
    """Check the token or key; a session cookie and the dashboard, or the form again."""
    access.check_csrf()
    next_page = flask.request.form.get("next", "")
    try:
        access.log_in(flask.request.form.get("token", ""))
    except errors.Unauthorized:
        return _render("login.html", next=next_page, failed=True), 401
    except errors.RateLimited as limited:
        page = _render("login.html", next=next_page, failed=False, throttled=limited.message)
        return page, 429, {"Retry-After": str(limited.retry_after_s)}
    return flask.redirect(_safe_next(flask.request.form.get("next")))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session, for every copy of its cookie."""
    access.log_out()
    return flask.redirect(flask.url_for(".login_form"))


# --- pages ------------------------------------------------------------------------------------


@bp.get("")
def index() -> ResponseReturnValue:
    """The operator's list of apps; an app goes straight to its own page."""
    principal = _principal()
    if not principal.operator:
        return flask.redirect(flask.url_for(".app_home", app_id=principal.app_id))
    until = _today()
    since = until - dt.timedelta(days=logs.STATS_DEFAULT_DAYS - 1)
    overview = reads.listing(lambda conn: dashboard.apps_overview(conn, since=since, until=until))
    return _render("apps.html", apps=overview["apps"], days=overview["days"], totals=overview["totals"],
                   engagement=chart.engagement_bars(overview["days"]))


@bp.get("/apps/<int:app_id>")
def app_home(app_id: int) -> str:
    """Today's counters and the last 14 days."""
    _app(app_id)
    until = _today()
    since = until - dt.timedelta(days=logs.STATS_DEFAULT_DAYS - 1)
    stats = reads.listing(lambda conn: logs.daily_stats(conn, app_id=app_id, since=since, until=until))
    days = stats["days"]
    return _render("app.html", app_id, today=days[-1], days=days, chart=chart.daily_bars(days),
                   totals=stats["totals"], engagement=chart.engagement_bars(days))


@bp.get("/apps/<int:app_id>/jobs")
def jobs(app_id: int) -> str:
    """The job list with /logs's filters (status, recipient, since, until, metadata.KEY), newest first."""
    _app(app_id)
    given = {key: value.strip() for key, value in flask.request.args.items() if value.strip() and key != "refresh"}
    query, problems = _load(schemas.LogsArgs(), given)
    if problems:
        query, _ = _load(schemas.LogsArgs(), {})
    page = reads.listing(
        lambda conn: logs.log_page(
            conn, app_id=app_id, limit=query["limit"], before=query["cursor"], status=query["status"],
            recipient=query["recipient"], since=query["since"], until=query["until"], metadata=query["metadata"],
        ),
        snapshot=True,
    )
    refresh = flask.request.args.get("refresh") == "1"
    older = None
    if page["next_cursor"]:
        older = _link(".jobs", app_id, {**given, "cursor": page["next_cursor"]})
    return _render(
        "jobs.html", app_id, page=page, filters=given, problems=problems, statuses=statuses.JOB_STATUSES,
        refresh=REFRESH_S if refresh else None, older=older,
    )


@bp.get("/apps/<int:app_id>/jobs/<job_id>")
def job(app_id: int, job_id: str) -> str:
    """One job: recipients with their event timelines, and the audit trail."""
    _app(app_id)
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise errors.NotFound(f"no job {job_id}") from None
    with db.connection(_pool()) as conn:
        story = status.job_status(conn, app_id=app_id, job_id=parsed)
        request_id = dashboard.job_request_id(conn, app_id=app_id, job_id=parsed)
    return _render("job.html", app_id, job=story, request_id=request_id)


@bp.get("/apps/<int:app_id>/suppressions")
def suppression_list(app_id: int) -> str:
    """The app's suppression list, newest first."""
    _app(app_id)
    given = {key: value.strip() for key, value in flask.request.args.items() if value.strip()}
    query, problems = _load(schemas.SuppressionListArgs(), given)
    if problems:
        query, _ = _load(schemas.SuppressionListArgs(), {})

    def listed(conn: psycopg.Connection) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            return suppressions.list_page(
                conn, app_id=app_id, limit=query["limit"], cursor=query["cursor"], email=query["email"]
            ), problems
        except errors.ValidationFailed as exc:
            return suppressions.list_page(conn, app_id=app_id, limit=query["limit"]), exc.details

    page, problems = reads.listing(listed)
    more = None
    if page["next_cursor"]:
        more = _link(".suppression_list", app_id, {**given, "cursor": page["next_cursor"]})
    return _render("suppressions.html", app_id, page=page, filters=given, problems=problems, more=more)


@bp.get("/apps/<int:app_id>/webhooks")
def webhook_list(app_id: int) -> str:
    """The app's webhook endpoints, each with its recent deliveries and their attempts, and its replays."""
    _app(app_id)
    return webhooks_page(app_id)


def webhooks_page(app_id: int, replay_failure: dict[str, Any] | None = None) -> str:
    """The webhooks page; `replay_failure` shows a refused replay form again (feed_pages.replay_window)."""
    with db.connection(_pool()) as conn:
        endpoints = webhooks.list_endpoints(conn, app_id=app_id)
        for endpoint in endpoints:
            endpoint_id = uuid.UUID(endpoint["id"])
            endpoint["deliveries"] = webhooks.list_deliveries(
                conn, app_id=app_id, endpoint_id=endpoint_id, limit=RECENT_DELIVERIES, cursor=None, status=None,
            )["items"]
            endpoint["replays"] = webhook_replays.recent(
                conn, app_id=app_id, endpoint_id=endpoint_id, limit=RECENT_REPLAYS
            )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    window = {"since": _instant(now - dt.timedelta(days=1)), "until": _instant(now), "types": []}
    return _render("webhooks.html", app_id, endpoints=endpoints, window=window, failure=replay_failure,
                   event_names=EVENT_NAMES)


def _instant(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.post("/apps/<int:app_id>/webhooks/<endpoint_id>/deliveries/<int:delivery_id>/replay")
def replay(app_id: int, endpoint_id: str, delivery_id: int) -> ResponseReturnValue:
    """Send a delivery again now (POST with the CSRF token), then back to the webhooks page."""
    _app(app_id)
    try:
        parsed = uuid.UUID(endpoint_id)
    except ValueError:
        raise errors.NotFound(f"no webhook {endpoint_id}") from None
    try:
        with db.connection(_pool()) as conn:
            webhooks.replay(conn, app_id=app_id, endpoint_id=parsed, delivery_id=delivery_id)
        flask.flash(f"Delivery {delivery_id} will be sent again now.", "ok")
    except errors.Conflict as exc:
        flask.flash(f"Delivery {delivery_id} was not replayed: {exc.message}", "error")
    return flask.redirect(flask.url_for(".webhook_list", app_id=app_id))


def _load(schema: Schema, data: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A query validated by the API's own schema; the problems to show instead of a 422."""
    try:
        return schema.load(data), {}  # type: ignore[return-value]  # a dict: not many=True
    except ValidationError as exc:
        return {}, details_from_marshmallow(exc.messages)


def _load_or_raise(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    """A form validated by the API's own schema; ValidationFailed as the API would answer it."""
    loaded, problems = _load(schema, data)
    if problems:
        raise errors.ValidationFailed("the form is not valid", problems)
    return loaded


def _link(endpoint: str, app_id: int, params: dict[str, str]) -> str:
    """A page's URL with these query parameters, encoded apart: url_for takes some names for itself
    (`endpoint`, `_external`, `app_id`), and a query parameter of that name must not reach it."""
    query = {key: value for key, value in params.items() if key != "app_id"}
    return f"{flask.url_for(endpoint, app_id=app_id)}?{urllib.parse.urlencode(query)}"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
