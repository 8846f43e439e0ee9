"""Apps and API keys: keys are shown once, stored as a hash and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import psycopg

from mailer import store
from mailer.domain import errors
from mailer.store.apps import App

KEY_PREFIX = "mk"
_DUMMY_HASH = hashlib.sha256(b"no such key").digest()
# Keys this process has authenticated: key id -> (app id, hash of the secret). A recalled key may have been
# revoked or rotated since, so whoever acts on one checks its key id in the same statement (insert_jobs).
_authenticated: dict[str, tuple[int, bytes]] = {}
_MAX_REMEMBERED = 10_000  # far more apps than a company has; past it, start over rather than grow


def _hash_secret(secret: str) -> bytes:
    # The secret has 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).digest()


def create_app(conn: psycopg.Connection, name: str) -> tuple[App, str]:
    """Register an app; return it with its API key (the only time the key is known)."""
    name = name.strip()
    if not name:
        raise errors.ValidationFailed("an app needs a name", {"name": ["must not be blank"]})
    key_id, secret = _new_key()
    try:
        with conn.transaction():
            app = store.insert_app(conn, name=name, key_id=key_id, key_hash=_hash_secret(secret))
    except psycopg.errors.UniqueViolation:
        raise errors.Conflict(f"an app named {name!r} exists already") from None
    return app, f"{KEY_PREFIX}_{key_id}_{secret}"


def rotate_key(conn: psycopg.Connection, name: str) -> tuple[App, str]:
    """Give an app a new API key (the old one stops working); return it with the key."""
    key_id, secret = _new_key()
    app = store.rotate_app_key(conn, name=name, key_id=key_id, key_hash=_hash_secret(secret))
    if app is None:
        raise errors.NotFound(f"no active app named {name!r}")
    return app, f"{KEY_PREFIX}_{key_id}_{secret}"


def _new_key() -> tuple[str, str]:
    return secrets.token_hex(6), secrets.token_urlsafe(32)


def authenticate(conn: psycopg.Connection, api_key: str) -> int:
    """The id of the app that owns `api_key`; Unauthorized otherwise."""
    key_id, secret = _parse(api_key)
    credentials = store.get_app_by_key_id(conn, key_id=key_id) if secret else None
    expected = credentials.key_hash if credentials else _DUMMY_HASH
    if not hmac.compare_digest(expected, _hash_secret(secret)) or credentials is None:
        if credentials is None:  # revoked or rotated: recalled no more, wherever it was refused
            _authenticated.pop(key_id, None)
        raise errors.Unauthorized("invalid or revoked API key")
    if len(_authenticated) >= _MAX_REMEMBERED:
        _authenticated.clear()
    _authenticated[key_id] = (credentials.id, credentials.key_hash)
    return credentials.id


def recall(api_key: str) -> tuple[int, str] | None:
    """(app id, key id) of a key this process authenticated before, asking no database; None otherwise."""
    # It may have been revoked or rotated since: act on it only in a statement that checks the key id.
    key_id, secret = _parse(api_key)
    remembered = _authenticated.get(key_id)
    if remembered is None or not hmac.compare_digest(remembered[1], _hash_secret(secret)):
        return None
    return remembered[0], key_id


def forget(api_key: str) -> None:
    """Stop recalling `api_key` (its statement found it revoked or rotated)."""
    _authenticated.pop(_parse(api_key)[0], None)


def _parse(api_key: str) -> tuple[str, str]:
    """(key id, secret) of an `mk_<key id>_<secret>` key; an empty secret when it has another shape."""
    prefix, _, rest = api_key.partition("_")
    key_id, _, secret = rest.partition("_")
    return (key_id, secret) if prefix == KEY_PREFIX else ("", "")


def revoke_app(conn: psycopg.Connection, name: str) -> App:
    """Revoke an app's key so it can no longer call the API."""
    app = store.revoke_app(conn, name=name)
    if app is None:
        raise errors.NotFound(f"no active app named {name!r}")
    return app
