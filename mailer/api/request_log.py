"""Every request gets a request id (the caller's X-Request-Id when valid) and one JSON log line."""

from __future__ import annotations

import logging
import re
import time

import flask
import werkzeug.routing

from mailer import logging_json

HEADER = "X-Request-Id"
# URL variables that hold personal data: a route with one is logged by its pattern, not its path.
PRIVATE_ARGUMENTS = frozenset({"email"})
_ADDRESS_SEGMENT = re.compile(r"[^/]*@[^/]*")

log = logging.getLogger("mailer.request")


def _start() -> None:
    given = logging_json.valid_request_id(flask.request.headers.get(HEADER))
    request_id = given or logging_json.new_request_id()
    flask.g.request_id = request_id
    flask.g.request_started = time.monotonic()
    flask.g.request_id_token = logging_json.bind_request_id(request_id)


def _finish(response: flask.Response) -> flask.Response:
    request_id = flask.g.get("request_id")
    if request_id is None:  # a failure before _start ran: still answer with an id
        request_id = flask.g.request_id = logging_json.new_request_id()
    response.headers[HEADER] = request_id
    started = flask.g.get("request_started")
    rule = flask.request.url_rule
    # The path only: query strings can hold addresses (/logs?recipient=) and cursors. A path that itself holds
    # an address (DELETE /suppressions/{email}) is logged as its route pattern.
    path = _loggable_path(flask.request.path, rule)
    log.info(
        "%s %s %s", flask.request.method, path, response.status_code,
        extra={
            "method": flask.request.method,
            "path": path,
            "route": None if rule is None else rule.rule,
            "status": response.status_code,
            "duration_ms": None if started is None else round((time.monotonic() - started) * 1000, 1),
            "app_id": flask.g.get("app_id"),
            "request_id": request_id,
        },
    )
    return response


def _loggable_path(path: str, rule: werkzeug.routing.Rule | None) -> str:
    """The path, or its route pattern when it holds an address; unrouted (404, 405), without any address."""
    if rule is None:  # GET /suppressions/{email} is a 405 that matched no rule: its path still holds the address
        return _ADDRESS_SEGMENT.sub("<redacted>", path)
    return path if rule.arguments.isdisjoint(PRIVATE_ARGUMENTS) else rule.rule


def _unbind(_: BaseException | None) -> None:
    token = flask.g.pop("request_id_token", None)
    if token is not None:
        logging_json.unbind_request_id(token)


def init_app(app: flask.Flask) -> None:
    """Install the hooks; the first before_request of the app, so the id exists for everything after."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_unbind)
