"""Every failure becomes the one error shape, here and nowhere else."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import flask
import psycopg
import psycopg_pool
from marshmallow import Schema, ValidationError
from werkzeug import exceptions as http

from mailer.domain import errors

log = logging.getLogger(__name__)

_HTTP_ERRORS: dict[int, type[errors.MailerError]] = {
    400: errors.MalformedRequest,
    401: errors.Unauthorized,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def error_response(error: errors.MailerError) -> flask.Response:
    """The JSON response for a MailerError."""
    response = flask.jsonify(error.to_dict())
    response.status_code = error.http_status
    if isinstance(error, errors.RateLimited):
        response.headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, errors.Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="mailer"'
    return response


def _from_mailer_error(error: errors.MailerError) -> flask.Response:
    return error_response(error)


def _from_http_exception(exc: http.HTTPException) -> flask.Response:
    code = exc.code or 500
    kind = _HTTP_ERRORS.get(code)
    if code == 413:
        limit = flask.current_app.config.get("MAX_CONTENT_LENGTH")
        return error_response(errors.PayloadTooLarge(f"request body is larger than {limit} bytes"))
    if kind is None:
        error = errors.MailerError(exc.description or "internal error")
        error.http_status = code
        return error_response(error)
    response = error_response(kind(exc.description or kind.code.replace("_", " ")))
    if isinstance(exc, http.MethodNotAllowed) and exc.valid_methods:
        # RFC 9110 15.5.6: a 405 names the methods the resource does support.
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _from_database_error(exc: Exception) -> flask.Response:
    log.warning("database unavailable: %s", type(exc).__name__)
    return error_response(errors.DatabaseUnavailable("the database is unavailable; try again shortly"))


def _from_anything(exc: Exception) -> flask.Response:
    log.exception("unhandled error")
    return error_response(errors.MailerError("internal error"))


def init_app(app: flask.Flask) -> None:
    """Register the handlers that turn exceptions into the error shape."""
    app.register_error_handler(errors.MailerError, _from_mailer_error)
    app.register_error_handler(http.HTTPException, _from_http_exception)
    for exc_type in (psycopg.OperationalError, psycopg_pool.PoolTimeout):
        app.register_error_handler(exc_type, _from_database_error)
    app.register_error_handler(Exception, _from_anything)


def details_from_marshmallow(messages: Any) -> dict[str, Any]:
    """marshmallow's error dict with JSON-friendly keys (a batch's indexes become strings)."""
    if isinstance(messages, dict):
        return {str(key): details_from_marshmallow(value) for key, value in messages.items()}
    if isinstance(messages, list):
        return [details_from_marshmallow(item) for item in messages]  # type: ignore[return-value]
    return messages


def load_or_422(schema: Schema, data: Any, message: str) -> dict[str, Any]:
    """`schema.load(data)`, or a 422 with `message` and each field's problems."""
    try:
        return schema.load(data)  # type: ignore[no-any-return]  # a dict: these schemas are not many=True
    except ValidationError as exc:
        raise errors.ValidationFailed(message, details_from_marshmallow(exc.messages)) from None


def id_or_404(raw: str, what: str) -> uuid.UUID:
    """An id from a URL; one that is not a UUID is simply unknown: 404 "no {what} {raw}"."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.NotFound(f"no {what} {raw}") from None
