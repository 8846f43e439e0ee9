"""POST /queue: accept email for sending."""

from __future__ import annotations

import functools
from typing import Any

import flask
import werkzeug.exceptions
from marshmallow import ValidationError

from mailer import db
from mailer.api import apidoc, auth, body, fast_message, responses, schemas, status
from mailer.api.errors import details_from_marshmallow
from mailer.api.schedule_schemas import SendAtPatchSchema
from mailer.domain import errors
from mailer.services import actions, queueing, template_messages

bp = flask.Blueprint("queue", __name__)

MAX_IDEMPOTENCY_KEY = 255
# One instance of each, for every request: building a schema copies its fields, and its nested schemas are
# built at its first load; that was three quarters of a single message's load (168 µs, against 41 µs reused).
# Loading keeps no state in the instance, so threads share them.
_MESSAGE_SCHEMA = schemas.MessageSchema()
_BATCH_SCHEMA = schemas.BatchSchema()


@bp.before_request
def _identify_caller() -> None:
    # The hot path, POST /queue without an Idempotency-Key, is one statement, which confirms a key this
    # process authenticated before (api/auth.py). A replay reads before it writes, so it needs the lookup.
    if flask.request.endpoint == "queue.queue_mail" and "Idempotency-Key" not in flask.request.headers:
        auth.recalled_caller()
    else:
        auth.current_app_id()


@bp.post("/queue")
@apidoc.operation(
    body=(schemas.MessageSchema, schemas.BatchSchema),
    responses={202: (responses.JobAnswerSchema, responses.BatchAnswerSchema)},
    headers=[{
        "name": "Idempotency-Key", "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
        "description": "a repeat with the same key and body returns the first answer; with another body it is 422",
    }],
    errors=(404, 409),  # 404: a message names a template the app does not have
)
def queue_mail() -> tuple[flask.Response, int]:
    """Validate one message or a batch, store it durably, answer 202 with the job id(s)."""
    try:
        payload, batch, messages = _read_messages()
        key = _idempotency_key()
    except (errors.MailerError, werkzeug.exceptions.HTTPException):  # the latter: a body over the size limit
        auth.current_app_id()  # a revoked key is 401 whatever the body (a recalled one is not yet checked)
        raise
    settings = flask.current_app.extensions["mailer.settings"]
    templated = template_messages.has_template(messages)
    if templated:
        auth.current_app_id()  # the key is checked before its app's templates are read (a revoked key is 401)
    try:
        # queueing.accept opens a transaction only when it needs one (an Idempotency-Key to store).
        with db.autocommit(flask.current_app.extensions["mailer.pool"]) as conn:
            accepted = queueing.accept(
                conn,
                app_id=flask.g.app_id,
                test=auth.test_key(),
                key_id_to_confirm=flask.g.key_id_to_confirm,  # set by _identify_caller
                jobs=(
                    functools.partial(_rendered_jobs, conn, flask.g.app_id, messages, batch, settings) if templated
                    else [new_job_from(message) for message in messages]
                ),
                batch=batch,
                batch_size=settings.send_batch_size,
                idempotency_key=key,
                idempotency_days=settings.retention_days,
                request_hash=queueing.request_fingerprint(payload) if key else "",
            )
    except errors.Unauthorized:
        auth.forget_recalled_key()
        raise
    return flask.jsonify(accepted.body), accepted.status_code


def _read_messages() -> tuple[Any, bool, list[dict[str, Any]]]:
    """The request body, whether it is a batch, and its messages as loaded by the schema."""
    payload = body.json_body()
    batch = isinstance(payload, dict) and "messages" in payload
    # The plain message skips marshmallow's cost (api/fast_message.py); anything else, and every error, goes
    # through the schema.
    loaded = fast_message.load_batch(payload) if batch else fast_message.load(payload)
    try:
        if loaded is None:
            loaded = (_BATCH_SCHEMA if batch else _MESSAGE_SCHEMA).load(payload)
    except ValidationError as exc:
        details = details_from_marshmallow(exc.messages)
        raise errors.ValidationFailed("the request is not a valid message", details) from None
    return payload, batch, loaded["messages"] if batch else [loaded]


def _rendered_jobs(
    conn: Any, app_id: int, messages: list[dict[str, Any]], batch: bool, settings: Any
) -> list[queueing.NewJob]:
    """Jobs of messages some of which name a stored template, rendered now (404/422 when they cannot be)."""
    rendered = template_messages.render_messages(
        conn, app_id=app_id, messages=messages, batch=batch, settings=settings
    )
    return [new_job_from(message) for message in rendered]


def new_job_from(loaded: dict[str, Any]) -> queueing.NewJob:
    """A loaded MessageSchema (rendered, if it names a template) as a job: the message proper, and its
    sending options and template apart."""
    message = dict(loaded)
    priority = message.pop("priority")
    metadata = message.pop("metadata")
    send_at = message.pop("send_at", None)
    template = message.pop("template", None)
    message["from"] = message.pop("from_")
    return queueing.NewJob(
        message=message, priority=priority, metadata=metadata, send_at=send_at,
        request_id=flask.g.get("request_id"),  # set by api/request_log.py for every request
        template_id=None if template is None else template["id"],
        template_version=None if template is None else template["version"],
    )


def _idempotency_key() -> str | None:
    key = flask.request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise errors.ValidationFailed(
            "Idempotency-Key must be 1 to 255 characters",
            {"Idempotency-Key": [f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters"]},
        )
    return key


@bp.delete("/queue/<job_id>")
@apidoc.operation(responses={200: responses.JobAnswerSchema}, path={"job_id": apidoc.UUID}, errors=(404, 409))
def cancel_job(job_id: str) -> flask.Response:
    """Cancel a scheduled or queued job."""
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        answer = actions.cancel(conn, app_id=auth.current_app_id(), job_id=status.parse_job_id(job_id))
    return flask.jsonify(answer)


@bp.post("/queue/<job_id>/retry")
@apidoc.operation(responses={202: responses.JobAnswerSchema}, path={"job_id": apidoc.UUID}, errors=(404, 409))
def retry_job(job_id: str) -> tuple[flask.Response, int]:
    """Queue a failed job again, keeping its id and history."""
    settings = flask.current_app.extensions["mailer.settings"]
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        answer = actions.retry(
            conn, app_id=auth.current_app_id(), job_id=status.parse_job_id(job_id), batch_size=settings.send_batch_size
        )
    return flask.jsonify(answer), 202


@bp.patch("/queue/<job_id>")
@apidoc.operation(
    body=SendAtPatchSchema, responses={200: responses.JobAnswerSchema}, path={"job_id": apidoc.UUID}, errors=(404, 409)
)
def reschedule_job(job_id: str) -> flask.Response:
    """Move a scheduled job to another send_at."""
    try:
        loaded = SendAtPatchSchema().load(body.json_body())
    except ValidationError as exc:
        raise errors.ValidationFailed("send_at is required", details_from_marshmallow(exc.messages)) from None
    settings = flask.current_app.extensions["mailer.settings"]
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        answer = actions.reschedule(
            conn, app_id=auth.current_app_id(), job_id=status.parse_job_id(job_id), send_at=loaded["send_at"],
            batch_size=settings.send_batch_size,
        )
    return flask.jsonify(answer)
