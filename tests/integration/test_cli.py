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
    revoked = mailer(database_url, "apps", "revoke", "shop")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.splitlines() == [
        "revoked app 'shop': its API key is refused from now on",
        "jobs cancelled: 0 (scheduled or queued; jobs already sending finish as they are)",
        "schedules done: 0",
        "webhook endpoints disabled: 0",
    ]
    assert "shop\trevoked" in mailer(database_url, "apps", "list").stdout
    missing = mailer(database_url, "apps", "revoke", "nobody")
    assert missing.returncode == 2
    assert "no app named 'nobody'" in missing.stderr
    again = mailer(database_url, "apps", "revoke", "shop")
    assert again.returncode == 2
    assert "the app 'shop' was revoked already" in again.stderr
    assert "Traceback" not in again.stderr + missing.stderr


def test_apps_create_with_from_domains_lists_them(database_url: str, conn: psycopg.Connection) -> None:
    created = mailer(
        database_url, "apps", "create", "billing", "--from-domain", "Example.COM", "--from-domain", "bücher.de.",
        "--from-domain", "example.com",
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("mk_")  # still alone on the last line
    assert "sending from example.com, xn--bcher-kva.de" in created.stdout
    stored = conn.execute("SELECT from_domains FROM apps WHERE name = 'billing'").fetchone()
    assert stored == (["example.com", "xn--bcher-kva.de"],)
    assert mailer(database_url, "apps", "create", "crm").returncode == 0
    listed = mailer(database_url, "apps", "list").stdout.splitlines()
    assert listed[0].startswith("billing\tactive") and listed[0].endswith("\tfrom example.com,xn--bcher-kva.de")
    assert listed[1].startswith("crm\tactive") and listed[1].endswith("\tfrom any domain")


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("", "a domain name is required"),
        ("localhost", "it needs a dot"),
        ("exa mple.com", "is not a domain name"),
        ("-bad.example.com", "is not a domain name"),
        ("a..example.com", "is not a domain name"),
        ("user@example.com", "is not a domain name"),
        ("192.168.0.1", "is an IP address"),
        ("x" * 64 + ".com", "is not a domain name"),
        (("a" * 60 + ".") * 5 + "com", "longer than 253"),
    ],
)
def test_apps_create_refuses_what_is_not_a_domain(database_url: str, conn: psycopg.Connection, domain, why) -> None:
    result = mailer(database_url, "apps", "create", "billing", "--from-domain=example.com", f"--from-domain={domain}")
    assert result.returncode == 2
    assert result.stderr.startswith("mailer: --from-domain: ")
    assert why in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert conn.execute("SELECT count(*) FROM apps WHERE name = 'billing'").fetchone() == (0,)


def test_apps_set_domains_changes_and_lifts_the_limit(database_url: str, conn: psycopg.Connection) -> None:
    assert mailer(database_url, "apps", "create", "shop").returncode == 0
    limited = mailer(database_url, "apps", "set-domains", "shop", "--from-domain=Shop.example", "--from-domain=b.io")
    assert limited.returncode == 0, limited.stderr
    assert "sending from b.io, shop.example" in limited.stdout
    assert conn.execute("SELECT from_domains FROM apps WHERE name = 'shop'").fetchone() == (["b.io", "shop.example"],)
    lifted = mailer(database_url, "apps", "set-domains", "shop", "--any-domain")
    assert lifted.returncode == 0, lifted.stderr
    assert "sending from any domain" in lifted.stdout
    assert conn.execute("SELECT from_domains FROM apps WHERE name = 'shop'").fetchone() == (None,)
    neither = mailer(database_url, "apps", "set-domains", "shop")  # lifting the limit is never implicit
    assert neither.returncode == 2
    both = mailer(database_url, "apps", "set-domains", "shop", "--any-domain", "--from-domain", "a.io")
    assert both.returncode == 2
    bad = mailer(database_url, "apps", "set-domains", "shop", "--from-domain", "nodot")
    assert bad.returncode == 2 and "it needs a dot" in bad.stderr
    assert conn.execute("SELECT from_domains FROM apps WHERE name = 'shop'").fetchone() == (None,)
    assert mailer(database_url, "apps", "revoke", "shop").returncode == 0
    revoked = mailer(database_url, "apps", "set-domains", "shop", "--from-domain", "a.io")
    assert revoked.returncode == 2 and "no active app named 'shop'" in revoked.stderr


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


def test_apps_create_test_makes_a_test_app_with_a_mk_test_key(database_url: str, conn: psycopg.Connection) -> None:
    result = mailer(database_url, "apps", "create", "sandbox", "--test")
    assert result.returncode == 0, result.stderr
    assert "test app" in result.stdout
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("mk_test_")
    assert apps.authenticate(conn, key) > 0
    assert mailer(database_url, "apps", "create", "billing").returncode == 0
    listed = dict(line.split("\t", 1) for line in mailer(database_url, "apps", "list").stdout.splitlines())
    assert listed["sandbox"].startswith("active\ttest\t") and "\tkey mk_test_" in listed["sandbox"]
    assert listed["billing"].startswith("active\tlive\t") and "\tkey mk_" in listed["billing"]
    assert key not in str(listed)


def test_a_migration_that_never_got_its_lock_is_named_not_called_unreachable(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailer import cli
    from mailer.store import migrations

    def gives_up(*_: object, **__: object) -> list[str]:
        raise migrations.MigrationLockError("0046_engagement_counting", "waited 5.0 s for a lock")

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(migrations, "migrate", gives_up)
    assert cli.main(["db", "migrate"]) == 2
    err = capsys.readouterr().err
    assert "migration 0046_engagement_counting waited 5.0 s for a lock on every try" in err
    assert "pg_locks" in err and "cannot reach the database" not in err
