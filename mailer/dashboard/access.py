"""Who is looking at the dashboard: the operator (every app) or one app (its own), and CSRF tokens.

Browsers log in once with the form and then carry a signed session cookie (HttpOnly, SameSite=Strict,
Secure unless turned off) whose session row is checked on every request; scripts send
`Authorization: Bearer <operator token or app key>` with every request and need no CSRF token, since a
browser never adds that header by itself.
"""

from __future__ import annotations

import contextlib
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


def _pool():  # type: ignore[no-untyped-def]
    return flask.current_app.extensions["mailer.pool"]


def _operator_fingerprint(token: str) -> str:
    """What the session keeps of the operator token: changing the token ends every operator session."""
    key = flask.current_app.session_interface.signing_key(flask.current_app)  # type: ignore[attr-defined]
    key = key if isinstance(key, bytes) else key.encode()
    return hmac.new(key, b"operator:" + token.encode(), hashlib.sha256).hexdigest()


def client_address() -> str:
    """The address the request came from: REMOTE_ADDR, the client's as the trusted proxies saw it when
    MAILER_TRUSTED_PROXY_HOPS is set (else, behind a proxy, the proxy's)."""
    return flask.request.remote_addr or "unknown"


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
    # A bearer token is a log-in too: refused while the address (or everyone) is throttled, before any
    # comparison, and each failure counted, or the operator token could be guessed here at full speed.
    address, settings = client_address(), _settings()
    with db.autocommit(_pool()) as conn:
        dashboard.check_login_allowed(conn, settings, address)
    if _is_operator_token(bearer_token() or ""):
        return Principal(app_id=None, via_session=False)
    try:
        return Principal(app_id=auth.current_app_id(), via_session=False)  # Unauthorized unless an app key
    except errors.Unauthorized:
        log.warning("dashboard login refused", extra={"client_address": address, "bearer": True})
        with db.autocommit(_pool()) as conn, contextlib.suppress(errors.RateLimited):
            dashboard.limit_login(conn, settings, address)
        raise


def _from_session() -> Principal | None:
    session = flask.session
    session_id = session.get("sid")
    if not isinstance(session_id, str):
        return None
    with db.autocommit(_pool()) as conn:
        live = dashboard.live_session(conn, session_id)
    if live is None:
        return None  # logged out, expired, or never ours
    if live.app_id is None:
        token = _settings().operator_token
        fingerprint = str(session.get("operator", ""))
        if token is None or not hmac.compare_digest(fingerprint, _operator_fingerprint(token)):
            return None  # the operator token changed (or was removed) since the login
        return Principal(app_id=None, via_session=True)
    if not live.key_current:
        return None  # the key was revoked or rotated since the login
    flask.g.app_id = live.app_id  # for the request's log line
    return Principal(app_id=live.app_id, via_session=True)


def log_in(given: str) -> Principal:
    """Check a token or app key from the login form and start a session; Unauthorized otherwise, and
    RateLimited when this address (or everyone) has tried too often."""
    given, address, settings = given.strip(), client_address(), _settings()
    with db.autocommit(_pool()) as conn:
        try:
            dashboard.limit_login(conn, settings, address)
        except errors.RateLimited:
            log.warning("dashboard login throttled", extra={"client_address": address})
            raise
        if _is_operator_token(given):
            app_id, key_id = None, None
        else:
            key_id = given.split("_")[1] if given.count("_") >= 2 else ""
            try:
                app_id = apps.authenticate(conn, given)
            except errors.Unauthorized:
                log.warning("dashboard login refused", extra={"client_address": address})
                raise errors.Unauthorized("that is neither the operator token nor a valid app key") from None
        earlier = flask.session.get("sid")
        if isinstance(earlier, str):  # a log-in over another session ends it: its cookie's copies too
            dashboard.end_session(conn, earlier)
        session_id, expires_at = dashboard.start_session(
            conn, app_id=app_id, key_id=key_id, lifetime_s=settings.dashboard_session_lifetime_s
        )
    principal = Principal(app_id=app_id, via_session=True)
    flask.session.clear()
    flask.session.permanent = True
    flask.session.update(sid=session_id, exp=int(expires_at.timestamp()), csrf=secrets.token_urlsafe(32))
    if app_id is None:
        flask.session["operator"] = _operator_fingerprint(given)
    else:
        flask.g.app_id = app_id
    log.info("dashboard login", extra={"operator": principal.operator, "app_id": app_id, "client_address": address})
    flask.g.dashboard_principal = principal
    return principal


def log_out() -> None:
    """End the session, on the server too: a copy of the cookie is refused from now on."""
    session_id = flask.session.get("sid")
    if isinstance(session_id, str):
        with db.autocommit(_pool()) as conn:
            dashboard.end_session(conn, session_id)
    flask.session.clear()


def csrf_token() -> str:
    """The session's CSRF token (made on first use), for hidden form fields."""
    token = flask.session.get("csrf")
    if not isinstance(token, str):
        # the cookie that now has to be sent needs the signing key: read it here, where a database that is
        # down makes the dashboard's own 503 page rather than a failure while the response is sent
        flask.current_app.session_interface.signing_key(flask.current_app)  # type: ignore[attr-defined]
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
