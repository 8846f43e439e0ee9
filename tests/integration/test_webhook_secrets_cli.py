"""Issue 17 review: `mailer db migrate` never fails on a secret it cannot read (it only encrypts secrets in
the clear); `mailer webhooks reencrypt` names the unreadable ones and exits non-zero without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
from cryptography.fernet import Fernet

from mailer.services import apps


def mailer(database_url: str, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "MAILER_WEBHOOK_SECRET_KEYS": keys}
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "mailer.cli", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def endpoint(conn: psycopg.Connection, app_id: object, n: int, secret: str) -> object:
    return conn.execute(
        "INSERT INTO webhook_endpoints (app_id, url, events, secret) VALUES (%s, %s, '{*}', %s) RETURNING id",
        (app_id, f"https://93.184.215.14/{n}", secret),
    ).fetchone()[0]  # type: ignore[index]


def test_migrate_encrypts_plaintext_warns_about_unreadable_and_succeeds(database_url, conn):
    app, _ = apps.create_app(conn, "a")
    old, new, lost = (Fernet.generate_key().decode() for _ in range(3))
    plain = "whsec_" + "A" * 40
    under_old = Fernet(old).encrypt(b"whsec_" + b"B" * 40).decode()
    unreadable = Fernet(lost).encrypt(b"whsec_" + b"C" * 40).decode()
    endpoint(conn, app.id, 1, plain)
    endpoint(conn, app.id, 2, under_old)
    endpoint(conn, app.id, 3, unreadable)

    result = mailer(database_url, f"{new},{old}", "db", "migrate")
    assert result.returncode == 0, result.stderr
    assert "1 of 3 endpoints stored in the clear encrypted" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "no key of MAILER_WEBHOOK_SECRET_KEYS" in line]
    assert len(warnings) == 1 and "1 webhook endpoint(s)" in warnings[0]
    assert "Traceback" not in result.stderr and unreadable not in result.stderr and lost not in result.stderr
    stored = [row[0] for row in conn.execute("SELECT secret FROM webhook_endpoints ORDER BY url")]
    assert Fernet(new).decrypt(stored[0].encode()).decode() == plain  # the plaintext one, with the first key
    assert stored[1:] == [under_old, unreadable]  # no re-keying: that is `mailer webhooks reencrypt`'s job
    assert mailer(database_url, f"{new},{old}", "db", "migrate").returncode == 0  # on every deploy


def test_reencrypt_rekeys_the_readable_and_names_the_unreadable(database_url, conn):
    app, _ = apps.create_app(conn, "a")
    old, new, lost = (Fernet.generate_key().decode() for _ in range(3))
    readable = endpoint(conn, app.id, 1, Fernet(old).encrypt(b"whsec_" + b"B" * 40).decode())
    unreadable_secret = Fernet(lost).encrypt(b"whsec_" + b"C" * 40).decode()
    unreadable = endpoint(conn, app.id, 2, unreadable_secret)

    result = mailer(database_url, f"{new},{old}", "webhooks", "reencrypt")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and unreadable_secret not in result.stderr
    assert str(unreadable) in result.stderr and str(readable) not in result.stderr
    assert "1 of 2 endpoints encrypted anew" in result.stdout
    [secret] = conn.execute("SELECT secret FROM webhook_endpoints WHERE id = %s", (readable,)).fetchone()  # type: ignore[misc]
    assert Fernet(new).decrypt(secret.encode()) == b"whsec_" + b"B" * 40
