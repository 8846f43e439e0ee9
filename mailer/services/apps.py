"""Apps and API keys: keys are shown once, stored as a hash and compared in constant time."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Sequence

import psycopg

from mailer import store
from mailer.domain import errors, senders
from mailer.store import apps as apps_store
from mailer.store import webhooks as webhooks_store
from mailer.store.apps import App

KEY_PREFIX = "mk"
# A test app's keys start mk_test_ (test mode: README "Test mode"); a key id is hex, so no live key does.
TEST_KEY_PREFIX = f"{KEY_PREFIX}_test"
_DUMMY_HASH = hashlib.sha256(b"no such key").digest()
# Keys this process has authenticated: key id -> (app id, hash of the secret, test app). A recalled key may have
# been revoked or rotated since, so whoever acts on one checks its key id in the same statement (insert_jobs).
_authenticated: dict[str, tuple[int, bytes, bool]] = {}
_MAX_REMEMBERED = 10_000  # far more apps than a company has; past it, start over rather than grow


def _hash_secret(secret: str) -> bytes:
    # The secret has 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).digest()


# The reason a revoked app's webhook endpoints show (GET /webhooks/{id} disabled_reason).
REVOKED_REASON = "app_revoked"
# Revoking is retried this often when PostgreSQL aborts it for a conflict with a concurrent transaction
# (a deadlock on a counter row, a schedule the scheduler moved at the same instant).
REVOKE_ATTEMPTS = 3


def create_app(
    conn: psycopg.Connection, name: str, from_domains: Sequence[str] = (), test: bool = False
) -> tuple[App, str]:
    """Register an app (limited to sending from `from_domains`, if any; a test app if `test`); return it with its
    API key."""
    name = name.strip()
    if not name:
        raise errors.ValidationFailed("an app needs a name", {"name": ["must not be blank"]})
    domains = _valid_domains(from_domains)
    key_id, secret = _new_key()
    try:
        with conn.transaction():
            app = apps_store.insert_app(
                conn, name=name, key_id=key_id, key_hash=_hash_secret(secret), from_domains=domains, test=test
            )
    except psycopg.errors.UniqueViolation:
        raise errors.Conflict(f"an app named {name!r} exists already") from None
    return app, _key(app.test, key_id, secret)


def rotate_key(conn: psycopg.Connection, name: str) -> tuple[App, str]:
    """Give an app a new API key (the old one stops working); return it with the key."""
    key_id, secret = _new_key()
    app = store.rotate_app_key(conn, name=name, key_id=key_id, key_hash=_hash_secret(secret))
    if app is None:
        raise errors.NotFound(f"no active app named {name!r}")
    return app, _key(app.test, key_id, secret)


def _new_key() -> tuple[str, str]:
    return secrets.token_hex(6), secrets.token_urlsafe(32)


def _key(test: bool, key_id: str, secret: str) -> str:
    return f"{TEST_KEY_PREFIX if test else KEY_PREFIX}_{key_id}_{secret}"


def key_hint(app: App) -> str:
    """How listings show an app's key: its prefix and key id, never the secret."""
    return f"{TEST_KEY_PREFIX if app.test else KEY_PREFIX}_{app.key_id}_…"


def authenticate(conn: psycopg.Connection, api_key: str) -> int:
    """The id of the app that owns `api_key`; Unauthorized otherwise."""
    key_id, secret, test = _parse(api_key)
    credentials = store.get_app_by_key_id(conn, key_id=key_id) if secret else None
    expected = credentials.key_hash if credentials else _DUMMY_HASH
    matches = hmac.compare_digest(expected, _hash_secret(secret))
    # A live app's key written as a test key (or the other way round) is no key of it.
    if not matches or credentials is None or credentials.test != test:
        if credentials is None:  # revoked or rotated: recalled no more, wherever it was refused
            _authenticated.pop(key_id, None)
        raise errors.Unauthorized("invalid or revoked API key")
    if len(_authenticated) >= _MAX_REMEMBERED:
        _authenticated.clear()
    _authenticated[key_id] = (credentials.id, credentials.key_hash, credentials.test)
    return credentials.id


def recall(api_key: str) -> tuple[int, str] | None:
    """(app id, key id) of a key this process authenticated before, asking no database; None otherwise."""
    # It may have been revoked or rotated since: act on it only in a statement that checks the key id.
    key_id, secret, test = _parse(api_key)
    remembered = _authenticated.get(key_id)
    if remembered is None or not hmac.compare_digest(remembered[1], _hash_secret(secret)) or remembered[2] != test:
        return None
    return remembered[0], key_id


def forget(api_key: str) -> None:
    """Stop recalling `api_key` (its statement found it revoked or rotated)."""
    _authenticated.pop(_parse(api_key)[0], None)


def _parse(api_key: str) -> tuple[str, str, bool]:
    """(key id, secret, test key) of an `mk_<key id>_<secret>` or `mk_test_<key id>_<secret>` key; an empty
    secret when it has another shape."""
    if api_key.startswith(f"{TEST_KEY_PREFIX}_"):
        rest, test = api_key.removeprefix(f"{TEST_KEY_PREFIX}_"), True
    elif api_key.startswith(f"{KEY_PREFIX}_"):
        rest, test = api_key.removeprefix(f"{KEY_PREFIX}_"), False
    else:
        return "", "", False
    key_id, _, secret = rest.partition("_")
    return key_id, secret, test


def set_from_domains(conn: psycopg.Connection, name: str, from_domains: Sequence[str]) -> App:
    """Change the domains an active app may send from (none: any); messages accepted before stay as they are."""
    app = apps_store.set_app_from_domains(conn, name=name, from_domains=_valid_domains(from_domains))
    if app is None:
        raise errors.NotFound(f"no active app named {name!r}")
    return app


def _valid_domains(raws: Sequence[str]) -> list[str] | None:
    try:
        return senders.normalize_domains(raws)
    except ValueError as exc:
        raise errors.ValidationFailed(f"--from-domain: {exc}", {"from_domain": [str(exc)]}) from None


@dataclasses.dataclass(frozen=True)
class Revoked:
    """What revoking an app did."""

    app: App
    jobs_cancelled: int
    schedules_done: int
    webhooks_disabled: int


def revoke_app(conn: psycopg.Connection, name: str) -> Revoked:
    """Stop an app in one transaction: its key is refused, its waiting jobs cancelled (audit event
    app_revoked) but those an earlier attempt may have sent (the sender asks Mailjet), its schedules done, its
    webhook endpoints disabled. Jobs already sending finish."""
    for attempt in range(1, REVOKE_ATTEMPTS + 1):
        try:
            with conn.transaction():
                return _revoke(conn, name)
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
            if attempt == REVOKE_ATTEMPTS:
                raise errors.Conflict(f"revoking {name!r} kept conflicting with other work; run it again") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _revoke(conn: psycopg.Connection, name: str) -> Revoked:
    found = apps_store.lock_app_by_name(conn, name=name)
    if found is None:
        raise errors.NotFound(f"no app named {name!r}")
    if found.revoked_at is not None:
        raise errors.Conflict(f"the app {name!r} was revoked already ({found.revoked_at:%Y-%m-%d %H:%M}Z)")
    app = apps_store.revoke_app(conn, app_id=found.id)
    assert app is not None  # noqa: S101  # locked above and not revoked
    # Schedules first: finishing one waits for a scheduler tick that holds it, so the jobs that tick
    # made have committed when the next statement looks for waiting jobs.
    schedules_done = apps_store.finish_schedules_of_app(conn, app_id=app.id)
    jobs_cancelled = apps_store.cancel_jobs_of_app(conn, app_id=app.id)
    endpoints = apps_store.disable_webhook_endpoints_of_app(conn, app_id=app.id, reason=REVOKED_REASON)
    for endpoint_id in endpoints:  # as PATCH enabled=false does: their pending deliveries stop
        webhooks_store.disable_webhook_deliveries(conn, endpoint_id=endpoint_id)
    return Revoked(app, jobs_cancelled, schedules_done, len(endpoints))
