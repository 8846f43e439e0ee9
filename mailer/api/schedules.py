"""/schedules: recurring email (reminders)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import flask
from marshmallow import Schema

from mailer import db
from mailer.api import apidoc, auth, body, cursors, queue, responses
from mailer.api import errors as api_errors
from mailer.api.schedule_schemas import ScheduleCreateSchema, ScheduleListSchema, SchedulePatchSchema
from mailer.domain import errors, recurrence
from mailer.services import scheduling, template_messages
from mailer.store import schedules as store

bp = flask.Blueprint("schedules", __name__)
bp.before_request(auth.require_app_key)

_ID = {"schedule_id": apidoc.UUID}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pool() -> Any:
    return flask.current_app.extensions["mailer.pool"]


def _settings() -> Any:
    return flask.current_app.extensions["mailer.settings"]


def _load(schema: Schema, data: Any) -> dict[str, Any]:
    return api_errors.load_or_422(schema, data, "the request is not a valid schedule")


def _schedule_id(raw: str) -> uuid.UUID:
    return api_errors.id_or_404(raw, "schedule")


def _spec(loaded: dict[str, Any], timezone: str) -> dict[str, Any]:
    """Loaded fields as stored columns: local naive times in the schedule's zone, the message apart."""
    zone = recurrence.parse_timezone(timezone)
    spec: dict[str, Any] = {}
    if "message" in loaded:
        job = queue.new_job_from(loaded["message"])
        spec.update(message=job.message, priority=job.priority, metadata=job.metadata,
                    template_id=job.template_id, template_version=job.template_version)
    if "start_at" in loaded:
        spec["start_local"] = recurrence.local_naive(loaded["start_at"], zone)
    if "until" in loaded:
        spec["until_local"] = None if loaded["until"] is None else recurrence.local_naive(loaded["until"], zone)
    for field in ("timezone", "frequency", "interval", "count"):
        if field in loaded:
            spec[field] = loaded[field]
    return spec


def _rendered(conn: Any, loaded: dict[str, Any]) -> dict[str, Any]:
    """The loaded body with its message rendered when it names a stored template: what was accepted is what
    every occurrence sends, whatever later versions of the template say (README, "Templates")."""
    if "message" not in loaded or not template_messages.has_template([loaded["message"]]):
        return loaded
    try:
        [message] = template_messages.render_messages(
            conn, app_id=auth.current_app_id(), messages=[loaded["message"]], batch=False, settings=_settings()
        )
    except errors.MailerError as exc:
        exc.details = {"message": exc.details}  # where the schema's errors of the message are
        raise
    return {**loaded, "message": message}


@bp.post("/schedules")
@apidoc.operation(body=ScheduleCreateSchema, responses={201: responses.ScheduleSchema}, errors=(404,))
def create_schedule() -> tuple[flask.Response, int]:
    """Create a recurring schedule; 201 with its next occurrence and the 5 after."""
    loaded = _load(ScheduleCreateSchema(), body.json_body())
    now = _now()
    with db.connection(_pool()) as conn:
        loaded = _rendered(conn, loaded)
        created = scheduling.create(
            conn, app_id=auth.current_app_id(), spec=_spec(loaded, loaded["timezone"]), now=now,
            max_past_days=_settings().schedule_max_past_days,
        )
        shown = scheduling.view(conn, created, now, with_jobs=True)
    return flask.jsonify(shown), 201


@bp.get("/schedules")
@apidoc.operation(query=ScheduleListSchema, responses={200: responses.SchedulePageSchema})
def list_schedules() -> flask.Response:
    """The app's schedules, newest first, a page at a time."""
    query = _load(ScheduleListSchema(), flask.request.args.to_dict())
    after = cursors.decode(query["cursor"]) if query["cursor"] else None
    now = _now()
    with db.connection(_pool()) as conn:
        rows = store.list_schedules(
            conn, app_id=auth.current_app_id(), state=query["status"], after=after, limit=query["limit"] + 1
        )
        items = [scheduling.view(conn, row, now, with_jobs=False) for row in rows[: query["limit"]]]
    more = len(rows) > query["limit"]
    last = rows[query["limit"] - 1] if more else None
    return flask.jsonify({"items": items, "next_cursor": cursors.encode(last) if last else None})


@bp.get("/schedules/<schedule_id>")
@apidoc.operation(responses={200: responses.ScheduleSchema}, path=_ID, errors=(404,))
def get_schedule(schedule_id: str) -> flask.Response:
    """One schedule with its upcoming occurrences and the jobs it produced."""
    with db.connection(_pool()) as conn:
        schedule = scheduling.get(conn, app_id=auth.current_app_id(), schedule_id=_schedule_id(schedule_id))
        return flask.jsonify(scheduling.view(conn, schedule, _now(), with_jobs=True))


@bp.patch("/schedules/<schedule_id>")
@apidoc.operation(body=SchedulePatchSchema, responses={200: responses.ScheduleSchema}, path=_ID, errors=(404, 409))
def patch_schedule(schedule_id: str) -> flask.Response:
    """Change message, rule or zone; upcoming is recomputed."""
    loaded = _load(SchedulePatchSchema(), body.json_body())
    app_id, key, now = auth.current_app_id(), _schedule_id(schedule_id), _now()
    with db.connection(_pool()) as conn:
        loaded = _rendered(conn, loaded)
        timezone = loaded.get("timezone") or scheduling.get(conn, app_id=app_id, schedule_id=key)["timezone"]
        updated = scheduling.update(
            conn, app_id=app_id, schedule_id=key, changes={**_spec(loaded, timezone), "timezone": timezone}, now=now,
            max_past_days=_settings().schedule_max_past_days,
        )
        return flask.jsonify(scheduling.view(conn, updated, now, with_jobs=True))


@bp.post("/schedules/<schedule_id>/done")
@apidoc.operation(responses={200: responses.ScheduleSchema}, path=_ID, errors=(404,))
def stop_schedule(schedule_id: str) -> flask.Response:
    """Stop: no further sends (waiting jobs of this schedule are cancelled)."""
    with db.connection(_pool()) as conn:
        stopped = scheduling.stop(conn, app_id=auth.current_app_id(), schedule_id=_schedule_id(schedule_id))
        return flask.jsonify(scheduling.view(conn, stopped, _now(), with_jobs=True))


@bp.delete("/schedules/<schedule_id>")
@apidoc.operation(responses={204: None}, path=_ID, errors=(404,))
def delete_schedule(schedule_id: str) -> tuple[str, int]:
    """Delete a schedule; the jobs it produced stay."""
    with db.connection(_pool()) as conn:
        scheduling.delete(conn, app_id=auth.current_app_id(), schedule_id=_schedule_id(schedule_id))
    return "", 204

