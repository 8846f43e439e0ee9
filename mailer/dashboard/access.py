"""Who is looking at the dashboard: the operator (every app) or one app (its own), and CSRF tokens.

Browsers log in once with the form and then carry a signed session cookie (HttpOnly, SameSite=Strict);
scripts send `Authorization: Bearer <operator token or app key>` with every request and need no CSRF
token, since a browser never adds that header by itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import secrets

import flask

from mailer import db
from mailer.api import auth
from mailer.domain import errors
from mailer.services import apps, dashboard

log = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"


@dataclasses.dataclass(frozen=True)
class Principal:
    """The operator (app_id None) or one app; and whether it came with the session cookie."""

    app_id: int | None
    via_session: bool

    @property
    def operator(self) -> bool:
        return self.app_id is None

    def require_app(self, app_id: int) -> None:
        """NotFound unless this principal may see that app (another app's pages are as unknown as none)."""
        if not self.operator and self.app_id != app_id:
            raise errors.NotFound(f"no app {app_id}")


def _settings():  # type: ignore[no-untyped-def]
    return flask.current_app.extensions["mailer.settings"]


def _operator_fingerprint(token: str) -> str:
    """What the session keeps of the operator token: changing the token ends every operator session."""
    key = str(flask.current_app.secret_key).encode()
    return hmac.new(key, b"operator:" + token.encode(), hashlib.sha256).hexdigest()


def _is_operator_token(given: str) -> bool:
    expected = _settings().operator_token
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def current() -> Principal | None:
    """The principal of this request (cached), or None when nobody is logged in."""
    if "dashboard_principal" in flask.g:
        return flask.g.dashboard_principal  # type: ignore[no-any-return]
    # (Another scheme, such as the Basic auth of a proxy in front, leaves the session in charge.)
    principal = _from_bearer() if bearer_token() is not None else _from_session()
    flask.g.dashboard_principal = principal
    return principal


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer` header, if the request has one."""
    scheme, _, token = flask.request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _from_bearer() -> Principal:
    if _is_operator_token(bearer_token() or ""):
        return Principal(app_id=None, via_session=False)
    return Principal(app_id=auth.current_app_id(), via_session=False)  # Unauthorized unless an app key


def _from_session() -> Principal | None:
    session = flask.session
    token = _settings().operator_token
    if session.get("operator") and token is not None:
        if hmac.compare_digest(str(session["operator"]), _operator_fingerprint(token)):
            return Principal(app_id=None, via_session=True)
        return None
    app_id, key_id = session.get("app_id"), session.get("key_id")
    if not isinstance(app_id, int) or not isinstance(key_id, str):
        return None
    with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
        if dashboard.app_of_key_id(conn, key_id=key_id) != app_id:
            return None  # the key was revoked or rotated since the login
    flask.g.app_id = app_id  # for the request's log line
    return Principal(app_id=app_id, via_session=True)


def log_in(given: str) -> Principal:
    """Check a token or app key from the login form and start a session; Unauthorized otherwise."""
    given = given.strip()
    if _is_operator_token(given):
        principal = Principal(app_id=None, via_session=True)
        _new_session(operator=_operator_fingerprint(given))
    else:
        key_id = given.split("_")[1] if given.count("_") >= 2 else ""
        with db.connection(flask.current_app.extensions["mailer.pool"]) as conn:
            try:
                app_id = apps.authenticate(conn, given)
            except errors.Unauthorized:
                log.warning("dashboard login refused")
                raise errors.Unauthorized("that is neither the operator token nor a valid app key") from None
        principal = Principal(app_id=app_id, via_session=True)
        _new_session(app_id=app_id, key_id=key_id)
        flask.g.app_id = app_id
    log.info("dashboard login", extra={"operator": principal.operator, "app_id": principal.app_id})
    flask.g.dashboard_principal = principal
    return principal


def _new_session(**values: object) -> None:
    flask.session.clear()
    flask.session.permanent = True
    flask.session.update(values)
    flask.session["csrf"] = secrets.token_urlsafe(32)


def log_out() -> None:
    """End the session."""
    flask.session.clear()


def csrf_token() -> str:
    """The session's CSRF token (made on first use), for hidden form fields."""
    token = flask.session.get("csrf")
    if not isinstance(token, str):
        token = flask.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """A form posted with the session cookie must carry the session's CSRF token (403 otherwise)."""
    principal = flask.g.get("dashboard_principal")
    if principal is not None and not principal.via_session:
        return  # a bearer token, not a cookie: nothing a foreign page could make the browser send
    expected = flask.session.get("csrf")
    given = flask.request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.Forbidden("the form is stale or did not come from the dashboard; reload the page and retry")
