"""Webhook signing secrets at rest: Fernet-encrypted with MAILER_WEBHOOK_SECRET_KEYS, or the instance key.

The first key encrypts, every key decrypts (MultiFernet), so a rotation is: put a new key first, run
`mailer webhooks reencrypt` (or `mailer db migrate`), then drop the old key. Without the variable the key is
`instance_key(conn, "webhook-secrets")`, kept in the same database: that protects a leaked dump of the
endpoints table only, which is why every process warns about it at start. (That key always decrypts too.)
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
import uuid

import psycopg
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mailer.config import Settings
from mailer.services.instance_keys import instance_key
from mailer.store import webhooks as store

log = logging.getLogger(__name__)

INSTANCE_KEY_NAME = "webhook-secrets"
PLAINTEXT_PREFIX = "whsec_"  # how a secret stored in the clear (before migration 0020) starts
REENCRYPT_BATCH = 500

_cache: dict[tuple[str, ...], MultiFernet] = {}
_lock = threading.Lock()


class SecretUnreadable(RuntimeError):
    """A stored secret that none of the configured keys decrypts (a key was dropped too early)."""


@dataclasses.dataclass(frozen=True)
class Reencrypted:
    """What a re-encryption pass did."""

    examined: int
    rewritten: int
    unreadable: tuple[uuid.UUID, ...] = ()  # endpoints whose secrets no configured key decrypts (left as they are)


def warn_if_keyed_by_the_database(settings: Settings) -> None:
    """At a process's start: say so when the secrets' key is kept in the database they protect."""
    if not settings.webhook_secret_keys:
        log.warning(
            "MAILER_WEBHOOK_SECRET_KEYS is not set: webhook secrets are encrypted with a key kept in the same "
            "database (instance key %r); set the variable to keep the key out of the database", INSTANCE_KEY_NAME,
        )


def _key_list(conn: psycopg.Connection, settings: Settings) -> tuple[str, ...]:
    """The environment's keys, then the instance key (which encrypts only when the environment sets none)."""
    # The instance key still decrypts once a key is set: moving to a key of one's own is one `reencrypt`.
    instance = base64.urlsafe_b64encode(instance_key(conn, INSTANCE_KEY_NAME)).decode("ascii")
    return (*settings.webhook_secret_keys, instance)


def cipher(conn: psycopg.Connection, settings: Settings) -> MultiFernet:
    """The keys of this installation's secrets: the environment's, else the database's instance key."""
    keys = _key_list(conn, settings)
    with _lock:
        found = _cache.get(keys)
        if found is None:
            found = _cache[keys] = MultiFernet([Fernet(key) for key in keys])
    return found


def encrypt(keys: MultiFernet, secret: str) -> str:
    """A secret as stored: a Fernet token made with the first key."""
    return keys.encrypt(secret.encode("ascii")).decode("ascii")


def decrypt(keys: MultiFernet, stored: str) -> str:
    """The secret (whsec_…) of a stored value; one still in the clear is returned as it is."""
    if stored.startswith(PLAINTEXT_PREFIX):
        return stored
    try:
        return keys.decrypt(stored.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise SecretUnreadable(
            "a webhook secret cannot be decrypted with MAILER_WEBHOOK_SECRET_KEYS (was a key dropped before "
            "`mailer webhooks reencrypt` ran?)"
        ) from None


def _current(keys: MultiFernet, stored: str | None) -> str | None:
    """The value to store: encrypted with the first key (None stays None)."""
    if stored is None:
        return None
    if stored.startswith(PLAINTEXT_PREFIX):
        return encrypt(keys, stored)
    return keys.rotate(stored.encode("ascii")).decode("ascii")


def _needs_rewrite(first: Fernet, stored: str | None) -> bool:
    if stored is None:
        return False
    if stored.startswith(PLAINTEXT_PREFIX):
        return True
    try:
        first.decrypt(stored.encode("ascii"))
    except InvalidToken:
        return True
    return False


def _readable(keys: MultiFernet, stored: str | None) -> bool:
    if stored is None or stored.startswith(PLAINTEXT_PREFIX):
        return True
    try:
        keys.decrypt(stored.encode("ascii"))
    except InvalidToken:
        return False
    return True


def reencrypt(conn: psycopg.Connection, settings: Settings, *, plaintext_only: bool = False) -> Reencrypted:
    """Encrypt every stored secret (and previous secret) with the first key; a batch per transaction.

    With plaintext_only (what `mailer db migrate` does) only secrets still in the clear are encrypted and the
    others are left under whatever key encrypted them. Secrets no key decrypts are skipped and reported.
    """
    keys, first = cipher(conn, settings), Fernet(_key_list(conn, settings)[0])
    examined = rewritten = 0
    unreadable: list[uuid.UUID] = []
    after: uuid.UUID | None = None
    while True:
        with conn.transaction():
            rows = store.list_webhook_secrets(conn, after_id=after, limit=REENCRYPT_BATCH)
            for row in rows:
                old = (row["secret"], row["previous_secret"])
                if not (_readable(keys, old[0]) and _readable(keys, old[1])):
                    unreadable.append(row["id"])
                    continue
                if plaintext_only:
                    if not any(value and value.startswith(PLAINTEXT_PREFIX) for value in old):
                        continue
                    new = tuple(encrypt(keys, v) if v and v.startswith(PLAINTEXT_PREFIX) else v for v in old)
                elif _needs_rewrite(first, old[0]) or _needs_rewrite(first, old[1]):
                    new = (_current(keys, old[0]) or "", _current(keys, old[1]))
                else:
                    continue
                if store.replace_webhook_secrets(conn, endpoint_id=row["id"], old=old, new=(new[0] or "", new[1])):
                    rewritten += 1
        examined += len(rows)
        if len(rows) < REENCRYPT_BATCH:
            return Reencrypted(examined=examined, rewritten=rewritten, unreadable=tuple(unreadable))
        after = rows[-1]["id"]
