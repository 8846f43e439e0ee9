"""The `mailer` command, run as a real process against the test database."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from mailer.domain import errors
from mailer.services import apps


def mailer(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "mailer.cli", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_apps_create_prints_the_key_last_and_stores_only_a_hash(database_url: str, conn: psycopg.Connection) -> None:
    result = mailer(database_url, "apps", "create", "billing")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("mk_")
    assert apps.authenticate(conn, key) > 0
    stored = conn.execute("SELECT key_id, key_hash FROM apps WHERE name = 'billing'").fetchone()
    assert stored is not None
    assert key.split("_", 2)[2].encode() not in bytes(stored[1])
    assert key not in str(stored)


def test_apps_create_twice_is_a_clear_error(database_url: str) -> None:
    assert mailer(database_url, "apps", "create", "billing").returncode == 0
    again = mailer(database_url, "apps", "create", "billing")
    assert again.returncode == 2
    assert "exists already" in again.stderr


def test_apps_list_and_revoke(database_url: str, conn: psycopg.Connection) -> None:
    key = mailer(database_url, "apps", "create", "shop").stdout.strip().splitlines()[-1]
    listed = mailer(database_url, "apps", "list")
    assert "shop\tactive" in listed.stdout
    assert key not in listed.stdout
    assert mailer(database_url, "apps", "revoke", "shop").returncode == 0
    assert "shop\trevoked" in mailer(database_url, "apps", "list").stdout
    missing = mailer(database_url, "apps", "revoke", "nobody")
    assert missing.returncode == 2
    assert "no active app" in missing.stderr


def test_apps_rotate_replaces_the_key(database_url: str, conn: psycopg.Connection) -> None:
    old = mailer(database_url, "apps", "create", "crm").stdout.strip().splitlines()[-1]
    new = mailer(database_url, "apps", "rotate", "crm").stdout.strip().splitlines()[-1]
    assert new != old
    assert apps.authenticate(conn, new) > 0
    with pytest.raises(errors.Unauthorized):
        apps.authenticate(conn, old)


def test_db_migrate_is_idempotent(database_url: str) -> None:
    result = mailer(database_url, "db", "migrate")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_missing_database_url_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "mailer.cli", "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr


def test_unreachable_database_is_a_clear_error() -> None:
    result = mailer("postgresql://postgres@127.0.0.1:9/none?connect_timeout=2", "apps", "list")
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr


def test_simulator_command_takes_its_own_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailer.cli", "simulator", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "--latency-ms" in result.stdout
