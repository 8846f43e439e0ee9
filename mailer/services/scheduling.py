"""Recurring schedules: create, change, stop, and the scheduler tick that turns occurrences into jobs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from typing import Any

import psycopg

from mailer.domain import errors, recurrence
from mailer.domain.recurrence import Recurrence
from mailer.domain.timefmt import rfc3339
from mailer.services import moves, queueing
from mailer.store import schedules as store
from mailer.store import templates as templates_store

log = logging.getLogger(__name__)

# Jobs are created this far ahead of their occurrence, as `scheduled` jobs whose wake-up fires at the
# occurrence time: they go out within a second of it however often the scheduler runs.
LEAD = dt.timedelta(seconds=60)
# An occurrence older than this when the scheduler reaches it was missed (downtime): only the most
# recent missed one is sent (at once); older ones are skipped, so a restart never sends a burst.
MISSED_AFTER = dt.timedelta(minutes=5)
_JUST_BEFORE = dt.timedelta(microseconds=1)

RULE_FIELDS = ("start_local", "timezone", "frequency", "interval", "count", "until_local")


@dataclasses.dataclass(frozen=True)
class Ticked:
    """What one scheduler pass did."""

    jobs: int = 0
    skipped: int = 0
    finished: int = 0


def recurrence_of(schedule: dict[str, Any]) -> Recurrence:
    """The rule of a stored (or proposed) schedule."""
    return Recurrence(**{field: schedule[field] for field in RULE_FIELDS})


def create(
    conn: psycopg.Connection, *, app_id: int, spec: dict[str, Any], now: dt.datetime, max_past_days: int
) -> dict[str, Any]:
    """Store a schedule that starts at its first occurrence from now on."""
    _check_start(spec, now, max_past_days)
    _check_until(spec)
    _check_from(conn, app_id, spec)
    first = recurrence_of(spec).next_after(now - _JUST_BEFORE)
    if first is None:
        raise errors.ValidationFailed(
            "the schedule has no occurrence from now on", {"start_at": ["all occurrences are in the past"]}
        )
    with conn.transaction():
        _hold_template(conn, app_id, spec)
        created = store.insert_schedule(conn, schedule={
            "template_id": None, "template_version": None,
            **spec, "id": uuid.uuid4(), "app_id": app_id, "next_occurrence": first,
        })
    if created is None:  # revoked since the request was authenticated
        raise errors.Unauthorized("invalid or revoked API key")
    return created


def get(conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID) -> dict[str, Any]:
    """One schedule of the app (NotFound for others')."""
    schedule = store.get_schedule(conn, app_id=app_id, schedule_id=schedule_id)
    if schedule is None:
        raise errors.NotFound(f"no schedule {schedule_id}")
    return schedule


def update(
    conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID, changes: dict[str, Any], now: dt.datetime,
    max_past_days: int,
) -> dict[str, Any]:
    """Change an active schedule; it continues from its first occurrence after now under the new rule."""
    if "start_local" in changes:  # a start_local kept from before may be old: the schedule has been running
        _check_start(changes, now, max_past_days)
    with conn.transaction():
        current = store.lock_active_schedule(conn, app_id=app_id, schedule_id=schedule_id)
        if current is None:
            get(conn, app_id=app_id, schedule_id=schedule_id)  # NotFound when unknown
            raise errors.Conflict("the schedule is done; it cannot be changed", {"status": "done"})
        _check_from(conn, app_id, changes)
        _hold_template(conn, app_id, changes)
        merged = {**current, **changes}
        if changes.get("count") is not None:
            merged["until_local"] = None
        if changes.get("until_local") is not None:
            merged["count"] = None
        _check_until(merged)
        # Occurrences already turned into jobs are protected by the (schedule, occurrence) key.
        following = recurrence_of(merged).next_after(now - _JUST_BEFORE)
        if following is None:
            store.update_schedule(conn, schedule={**merged, "next_occurrence": current["next_occurrence"]})
            store.finish_schedule(conn, app_id=app_id, schedule_id=schedule_id)
        else:
            store.update_schedule(conn, schedule={**merged, "next_occurrence": following})
    return get(conn, app_id=app_id, schedule_id=schedule_id)


def stop(conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID) -> dict[str, Any]:
    """No further sends: the schedule is done and its waiting jobs are cancelled (idempotent)."""
    moves.again_if_moved(lambda: _stop(conn, app_id, schedule_id))
    return get(conn, app_id=app_id, schedule_id=schedule_id)


def _stop(conn: psycopg.Connection, app_id: int, schedule_id: uuid.UUID) -> None:
    with conn.transaction():
        get(conn, app_id=app_id, schedule_id=schedule_id)
        store.finish_schedule(conn, app_id=app_id, schedule_id=schedule_id)
        store.cancel_scheduled_jobs_of_schedule(conn, app_id=app_id, schedule_id=schedule_id)


def delete(conn: psycopg.Connection, *, app_id: int, schedule_id: uuid.UUID) -> None:
    """Delete a schedule and cancel its waiting jobs; the jobs it produced stay queryable."""
    moves.again_if_moved(lambda: _delete(conn, app_id, schedule_id))


def _delete(conn: psycopg.Connection, app_id: int, schedule_id: uuid.UUID) -> None:
    with conn.transaction():
        store.cancel_scheduled_jobs_of_schedule(conn, app_id=app_id, schedule_id=schedule_id)
        if not store.delete_schedule(conn, app_id=app_id, schedule_id=schedule_id):
            raise errors.NotFound(f"no schedule {schedule_id}")


def tick(conn: psycopg.Connection, *, now: dt.datetime, batch_size: int, limit: int = 100) -> Ticked:
    """Turn every occurrence due before now + LEAD into exactly one job; safe with several schedulers."""
    with conn.transaction():
        totals = Ticked(finished=store.finish_due_schedules_of_revoked_apps(conn, horizon=now + LEAD, limit=limit))
        for schedule in store.claim_due_schedules(conn, horizon=now + LEAD, limit=limit):
            totals = _merge(totals, _produce(conn, schedule, now, batch_size))
    return totals


def _produce(conn: psycopg.Connection, schedule: dict[str, Any], now: dt.datetime, batch_size: int) -> Ticked:
    rule = recurrence_of(schedule)
    due: list[dt.datetime] = []
    # One walk of the rule for every due occurrence (next_after each time would walk from the start again).
    following: dt.datetime | None = schedule["next_occurrence"]
    walk = rule.occurrences(following)
    while following is not None and following <= now + LEAD:
        due.append(following)
        following = next(walk, None)
    missed = [at for at in due if at < now - MISSED_AFTER]
    skipped = [
        at for at in missed[:-1]
        if store.claim_occurrence(conn, schedule_id=schedule["id"], occurs_at=at, job_id=None)
    ]
    jobs = []
    for at in missed[-1:] + [at for at in due if at >= now - MISSED_AFTER]:
        job = queueing.NewJob(
            message=schedule["message"], priority=schedule["priority"], metadata=schedule["metadata"],
            send_at=None if at in missed else at, schedule_id=schedule["id"],
            template_id=schedule["template_id"], template_version=schedule["template_version"],
        )
        if store.claim_occurrence(conn, schedule_id=schedule["id"], occurs_at=at, job_id=job.id):
            jobs.append(job)
    if jobs:
        queueing.insert(conn, schedule["app_id"], jobs, batch_size)
    if skipped:
        log.warning("schedule %s: skipped %d missed occurrences", schedule["id"], len(skipped))
    if following is None:
        store.finish_schedule(conn, app_id=schedule["app_id"], schedule_id=schedule["id"])
    else:
        store.advance_schedule(conn, schedule_id=schedule["id"], next_occurrence=following)
    return Ticked(jobs=len(jobs), skipped=len(skipped), finished=int(following is None))


def _merge(a: Ticked, b: Ticked) -> Ticked:
    return Ticked(jobs=a.jobs + b.jobs, skipped=a.skipped + b.skipped, finished=a.finished + b.finished)


def _check_start(spec: dict[str, Any], now: dt.datetime, max_past_days: int) -> None:
    # Every occurrence is computed by walking the rule from its start (dateutil has no shortcut): a start in
    # year 1 made each computation walk 740,000 days (about 1 s). A start at most this far back bounds it.
    zone = recurrence.parse_timezone(spec.get("timezone") or "UTC")
    earliest = recurrence.local_naive(now, zone) - dt.timedelta(days=max_past_days)
    if spec["start_local"] < earliest:
        raise errors.ValidationFailed(
            f"start_at is more than {max_past_days} days in the past",
            {"start_at": [f"must be at most {max_past_days} days in the past (MAILER_SCHEDULE_MAX_PAST_DAYS)"]},
        )


def _check_until(spec: dict[str, Any]) -> None:
    if spec.get("until_local") is not None and spec["until_local"] < spec["start_local"]:
        raise errors.ValidationFailed("until is before start_at", {"until": ["must not be before start_at"]})


def _check_from(conn: psycopg.Connection, app_id: int, spec: dict[str, Any]) -> None:
    """A new message must come from a domain the app may send from (422 naming message.from)."""
    if "message" not in spec:
        return
    try:
        queueing.refuse_disallowed_from(conn, app_id, [spec["message"]])
    except queueing.FromNotAllowed as refused:
        error = refused.validation_error(batch=False)
        raise errors.ValidationFailed(error.message, {"message": error.details}) from None


def _hold_template(conn: psycopg.Connection, app_id: int, spec: dict[str, Any]) -> None:
    """Keep the template a schedule's message was rendered from until the schedule commits (NotFound if it was
    deleted since it was rendered): DELETE /templates counts the active schedules that name it after its lock."""
    template_id = spec.get("template_id")
    if template_id is not None and not templates_store.share_template(conn, app_id=app_id, template_id=template_id):
        raise errors.NotFound(f"no template {template_id}", {"message": {"template": [f"no template {template_id}"]}})


def view(conn: psycopg.Connection, schedule: dict[str, Any], now: dt.datetime, *, with_jobs: bool) -> dict[str, Any]:
    """A schedule as the API shows it, with its next 5 occurrences (and its jobs)."""
    active = schedule["state"] == "active"
    shown = {
        "id": str(schedule["id"]),
        "status": schedule["state"],
        "message": schedule["message"],
        "priority": schedule["priority"],
        "metadata": schedule["metadata"],
        "start_at": schedule["start_local"].isoformat(),
        "timezone": schedule["timezone"],
        "frequency": schedule["frequency"],
        "interval": schedule["interval"],
        "count": schedule["count"],
        "until": schedule["until_local"].isoformat() if schedule["until_local"] else None,
        "next_occurrence": rfc3339(schedule["next_occurrence"]),
        "upcoming": [rfc3339(at) for at in recurrence_of(schedule).upcoming(now)] if active else [],
        "created_at": rfc3339(schedule["created_at"]),
        "updated_at": rfc3339(schedule["updated_at"]),
        "finished_at": rfc3339(schedule["finished_at"]),
        "template": None if schedule["template_id"] is None else {
            "id": str(schedule["template_id"]), "version": schedule["template_version"],
        },
    }
    if with_jobs:
        shown["jobs"] = [str(job_id) for job_id in store.list_schedule_jobs(conn, schedule_id=schedule["id"])]
    return shown
