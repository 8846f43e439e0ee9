"""Issue 17, webhook endpoints: a cap per app, one endpoint per URL (also under concurrent requests), ports
80/443 only, secrets encrypted at rest, and migration 0020 on an installation that broke those rules."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import psycopg
import pytest
from cryptography.fernet import Fernet, MultiFernet

from mailer.config import Settings
from mailer.services import webhook_secrets
from mailer.store.queries import SQL_DIR

PUBLIC = "https://93.184.215.14/hooks"  # a public IP literal: no DNS needed, never called here
CAP = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_max_endpoints=CAP)


@pytest.fixture
def other_auth(conn: psycopg.Connection) -> dict[str, str]:
    from tests.integration.conftest import make_key

    return {"Authorization": f"Bearer {make_key(conn, 'other')}"}


def post(client, auth, url: str):  # type: ignore[no-untyped-def]
    return client.post("/webhooks", json={"url": url, "events": ["*"]}, headers=auth)


def test_an_app_may_have_at_most_the_configured_number_of_endpoints(client, auth, other_auth):
    for n in range(CAP):
        assert post(client, auth, f"{PUBLIC}/{n}").status_code == 201
    refused = post(client, auth, f"{PUBLIC}/{CAP}")
    assert refused.status_code == 422
    assert f"at most {CAP} webhook endpoints" in refused.json["error"]["message"]
    assert "MAILER_WEBHOOK_MAX_ENDPOINTS" in refused.json["error"]["message"]
    assert refused.json["error"]["details"]["limit"] == CAP
    assert len(client.get("/webhooks", headers=auth).json["items"]) == CAP
    assert post(client, other_auth, f"{PUBLIC}/{CAP}").status_code == 201  # another app has its own cap
    # deleting one makes room again
    first = client.get("/webhooks", headers=auth).json["items"][0]["id"]
    assert client.delete(f"/webhooks/{first}", headers=auth).status_code == 204
    assert post(client, auth, f"{PUBLIC}/{CAP}").status_code == 201


def test_one_endpoint_per_url_per_app(client, auth, other_auth):
    created = post(client, auth, PUBLIC).json
    again = post(client, auth, PUBLIC)
    assert again.status_code == 409
    assert again.json["error"]["details"]["webhook_id"] == created["id"]
    assert post(client, other_auth, PUBLIC).status_code == 201  # per app
    other = post(client, auth, PUBLIC + "/2").json
    patched = client.patch(f"/webhooks/{other['id']}", json={"url": PUBLIC}, headers=auth)
    assert patched.status_code == 409
    assert client.get(f"/webhooks/{other['id']}", headers=auth).json["url"] == PUBLIC + "/2"
    # a disabled endpoint keeps its URL taken too
    client.patch(f"/webhooks/{created['id']}", json={"enabled": False}, headers=auth)
    assert post(client, auth, PUBLIC).status_code == 409
    # an endpoint may be patched to its own URL, and other fields change as before
    same = client.patch(f"/webhooks/{other['id']}", json={"url": PUBLIC + "/2", "events": ["sent"]}, headers=auth)
    assert same.status_code == 200 and same.json["events"] == ["sent"]


@pytest.mark.parametrize("spelling", [
    "HTTPS://93.184.215.14/hooks", "https://93.184.215.14:443/hooks", "https://93.184.215.14/hooks?",
    "https://93.184.215.14/hooks#", "hTTps://93.184.215.14:443/hooks?#",
])
def test_one_endpoint_per_url_compares_urls_normalized(client, auth, spelling):
    created = post(client, auth, PUBLIC).json
    again = post(client, auth, spelling)
    assert again.status_code == 409, spelling
    assert again.json["error"]["details"]["webhook_id"] == created["id"]
    other = post(client, auth, PUBLIC + "/2").json
    assert client.patch(f"/webhooks/{other['id']}", json={"url": spelling}, headers=auth).status_code == 409


def test_urls_that_differ_after_normalizing_are_two_endpoints_and_keep_their_spelling(client, auth):
    first = post(client, auth, "HTTPS://93.184.215.14:443/Hooks?")
    # as sent, but for the scheme's case (was a 500: the table's CHECK wants a lower-case scheme)
    assert first.status_code == 201 and first.json["url"] == "https://93.184.215.14:443/Hooks?"
    for different in (PUBLIC, "https://93.184.215.14/Hooks?a=1"):  # the path's case and a query count
        assert post(client, auth, different).status_code == 201, different


def test_concurrent_posts_never_pass_the_cap_or_duplicate_a_url(app, auth):
    results: list[int] = []
    lock = threading.Lock()

    def race(urls: list[str]) -> None:
        start = threading.Barrier(len(urls))

        def one(url: str) -> None:
            own = app.test_client()
            start.wait()
            status = post(own, auth, url).status_code
            with lock:
                results.append(status)

        threads = [threading.Thread(target=one, args=(url,)) for url in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    race([f"{PUBLIC}/same"] * 6)
    assert sorted(results) == [201] + [409] * 5
    results.clear()
    race([f"{PUBLIC}/{n}" for n in range(6)])
    assert sorted(results) == [201] * (CAP - 1) + [422] * (6 - CAP + 1)
    assert len(app.test_client().get("/webhooks", headers=auth).json["items"]) == CAP


@pytest.mark.parametrize("url", ["https://93.184.215.14:8443/h", "http://93.184.215.14:22/", "http://93.184.215.14:6379/"])
def test_only_ports_80_and_443_at_registration_and_on_patch(client, auth, url):
    refused = post(client, auth, url)
    assert refused.status_code == 422
    assert "port 80 or 443" in refused.json["error"]["details"]["url"][0]
    endpoint = post(client, auth, "http://93.184.215.14:80/h").json
    patched = client.patch(f"/webhooks/{endpoint['id']}", json={"url": url}, headers=auth)
    assert patched.status_code == 422
    assert post(client, auth, "https://93.184.215.14:443/h").status_code == 201


def test_any_port_when_private_addresses_are_allowed(settings, conn):
    from mailer import create_app
    from tests.integration.conftest import make_key

    app = create_app(dataclasses.replace(settings, webhook_allow_private=True))
    try:
        auth = {"Authorization": f"Bearer {make_key(conn, 'dev')}"}
        assert post(app.test_client(), auth, "http://127.0.0.1:8080/h").status_code == 201
    finally:
        app.extensions["mailer.pool"].close()


# --- secrets at rest --------------------------------------------------------------------------


def stored(conn: psycopg.Connection) -> list[tuple[str, str | None]]:
    return [tuple(row) for row in conn.execute("SELECT secret, previous_secret FROM webhook_endpoints ORDER BY id")]


def test_secrets_are_stored_encrypted_with_the_instance_key_when_no_key_is_set(client, auth, conn, settings):
    created = post(client, auth, PUBLIC).json
    [(secret, previous)] = stored(conn)
    assert previous is None
    assert created["secret"] not in secret and not secret.startswith("whsec_")
    key = conn.execute("SELECT key FROM instance_keys WHERE name = 'webhook-secrets'").fetchone()[0]
    assert Fernet(base64.urlsafe_b64encode(bytes(key))).decrypt(secret.encode()).decode() == created["secret"]

    rotated = client.post(f"/webhooks/{created['id']}/rotate-secret", headers=auth).json
    [(secret, previous)] = stored(conn)
    assert created["secret"] not in str(previous) and rotated["secret"] not in secret
    keys = webhook_secrets.cipher(conn, settings)
    assert (webhook_secrets.decrypt(keys, secret), webhook_secrets.decrypt(keys, str(previous))) == (
        rotated["secret"], created["secret"])


def test_keys_from_the_environment_rotate_with_reencrypt(app, client, auth, conn, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app.extensions["mailer.settings"] = dataclasses.replace(settings, webhook_secret_keys=(old,))
    created = post(client, auth, PUBLIC).json
    client.post(f"/webhooks/{created['id']}/rotate-secret", headers=auth)
    [(secret, previous)] = stored(conn)
    assert Fernet(old).decrypt(str(previous).encode()).decode() == created["secret"]

    both = dataclasses.replace(settings, webhook_secret_keys=(new, old))
    done = webhook_secrets.reencrypt(conn, both)
    assert (done.examined, done.rewritten) == (1, 1)
    [(secret, previous)] = stored(conn)
    only_new = MultiFernet([Fernet(new)])
    assert webhook_secrets.decrypt(only_new, str(previous)) == created["secret"]
    webhook_secrets.decrypt(only_new, secret)  # the current secret too
    assert webhook_secrets.reencrypt(conn, both).rewritten == 0  # nothing left to do
    with pytest.raises(webhook_secrets.SecretUnreadable):
        webhook_secrets.decrypt(MultiFernet([Fernet(old)]), secret)


def test_no_secret_in_the_settings_repr():
    key = Fernet.generate_key().decode()
    assert key not in repr(Settings(webhook_secret_keys=(key,)))


# --- migration 0020 on an installation that already broke the new rules -----------------------


@pytest.fixture
def before_0020(pg_cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A database migrated up to 0020 (exclusive), as an existing deployment has it; its URL."""
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS webhooks_upgrade")
        admin.execute("CREATE DATABASE webhooks_upgrade")
    try:
        with psycopg.connect(pg_cluster.url("webhooks_upgrade"), autocommit=True) as conn:
            for path in sorted((SQL_DIR / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
                if path.stem < "0020":
                    conn.execute(path.read_text())  # type: ignore[arg-type]  # our migration files
                    conn.execute("INSERT INTO mailer_migrations (name) VALUES (%s)", (path.stem,))
        yield pg_cluster.url("webhooks_upgrade")
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute("DROP DATABASE webhooks_upgrade WITH (FORCE)")


def test_migrate_keeps_extra_endpoints_disables_duplicates_and_encrypts_every_secret(before_0020):
    plain = [f"whsec_{base64.b64encode(os.urandom(32)).decode()}" for _ in range(15)]
    with psycopg.connect(before_0020, autocommit=True) as conn:
        app = conn.execute("INSERT INTO apps (name, key_id, key_hash) VALUES ('old', 'old', '\\x00') RETURNING id"
                           ).fetchone()[0]  # type: ignore[index]
        for n in range(12):  # more than the cap of 10
            conn.execute("INSERT INTO webhook_endpoints (app_id, url, events, secret, created_at) VALUES "
                         "(%s, %s, '{*}', %s, now() - make_interval(mins => 20 - %s))",
                         (app, f"{PUBLIC}/{n}", plain[n], n))
        for n in range(12, 15):  # two more with the URL of endpoint 0, the last one disabled already
            conn.execute("INSERT INTO webhook_endpoints (app_id, url, events, secret, previous_secret,"
                         " previous_secret_expires_at) VALUES (%s, %s, '{*}', %s, %s, now() + interval '1 hour')",
                         (app, f"{PUBLIC}/0", plain[n], plain[0]))
        conn.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE secret = %s", (plain[14],))

    env = {**os.environ, "DATABASE_URL": before_0020}
    env.pop("MAILER_WEBHOOK_SECRET_KEYS", None)
    result = subprocess.run(
        [sys.executable, "-m", "mailer.cli", "db", "migrate"], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "0020_webhook_fan_out_outbox" in result.stdout
    assert "15 of 15 endpoints stored in the clear encrypted" in result.stdout

    with psycopg.connect(before_0020, autocommit=True) as conn:
        rows = conn.execute("SELECT url, secret, previous_secret, disabled_at IS NULL, disabled_reason "
                            "FROM webhook_endpoints ORDER BY created_at, id").fetchall()
        assert len(rows) == 15  # nothing deleted; the app keeps its 12 distinct endpoints
        assert sum(row[3] for row in rows) == 12  # every distinct URL keeps one enabled endpoint
        assert [row[3] for row in rows if row[0] == f"{PUBLIC}/0"] == [True, False, False, False]  # the oldest
        reasons = [row[4] for row in rows if row[0] == f"{PUBLIC}/0"]
        assert reasons[0] is None and reasons[3] is None  # the one disabled before keeps its state
        assert "same URL" in reasons[1] and "same URL" in reasons[2]
        keys = webhook_secrets.cipher(conn, Settings())
        for _, secret, previous, _, _ in rows:
            assert not secret.startswith("whsec_") and not str(previous).startswith("whsec_")
        decrypted = {webhook_secrets.decrypt(keys, row[1]) for row in rows}
        assert decrypted == set(plain)
        assert {webhook_secrets.decrypt(keys, row[2]) for row in rows if row[2]} == {plain[0]}


def test_moving_from_the_instance_key_to_a_key_of_ones_own_is_one_reencrypt(client, auth, conn, settings):
    created = post(client, auth, PUBLIC).json  # encrypted with the instance key
    own = dataclasses.replace(settings, webhook_secret_keys=(Fernet.generate_key().decode(),))
    assert webhook_secrets.reencrypt(conn, own).rewritten == 1
    [(secret, _)] = stored(conn)
    assert Fernet(own.webhook_secret_keys[0]).decrypt(secret.encode()).decode() == created["secret"]


def test_web_and_worker_warn_at_start_when_the_key_is_kept_in_the_database(settings, caplog):
    from mailer import create_app

    warning = "MAILER_WEBHOOK_SECRET_KEYS is not set"
    create_app(settings).extensions["mailer.pool"].close()
    assert warning in caplog.text
    caplog.clear()
    keyed = dataclasses.replace(settings, webhook_secret_keys=(Fernet.generate_key().decode(),))
    create_app(keyed).extensions["mailer.pool"].close()
    assert warning not in caplog.text


def test_no_secret_in_the_delivery_logs(client, auth, conn, settings, caplog):
    from mailer import db
    from mailer.services import webhook_delivery
    from tests.integration.webhooks_support import mark_sent, queue

    local = dataclasses.replace(settings, webhook_allow_private=True, webhook_timeout_s=1.0, webhook_host_rate_per_s=0)
    from mailer import create_app

    app = create_app(local)
    try:
        created = post(app.test_client(), auth, "http://127.0.0.1:9/hook?token=t0k3n").json
        mark_sent(conn, queue(client, auth))
        pool = db.create_pool(local, name="test-secret-logs", max_size=2)
        try:
            [done] = webhook_delivery.deliver_due_batch(pool, local)
        finally:
            pool.close()
    finally:
        app.extensions["mailer.pool"].close()
    assert done.attempt is not None and done.attempt.error == "connection failed"
    [(stored_secret, _)] = stored(conn)
    assert "webhook delivery" in caplog.text
    for secret in (created["secret"], created["secret"][6:], stored_secret, "t0k3n"):
        assert secret not in caplog.text
    assert created["secret"] not in repr(done)


def test_enabling_a_duplicate_left_by_an_older_release_is_409(client, auth, conn):
    kept = post(client, auth, PUBLIC).json
    app_id = conn.execute("SELECT app_id FROM webhook_endpoints").fetchone()[0]  # type: ignore[index]
    duplicate = conn.execute(
        "INSERT INTO webhook_endpoints (app_id, url, events, secret, disabled_at, disabled_reason) "
        "VALUES (%s, %s, '{*}', 'whsec_x', now(), 'duplicate') RETURNING id", (app_id, PUBLIC),
    ).fetchone()[0]  # type: ignore[index]
    enabling = client.patch(f"/webhooks/{duplicate}", json={"enabled": True}, headers=auth)
    assert enabling.status_code == 409
    assert enabling.json["error"]["details"]["webhook_id"] == kept["id"]
    # what cannot make a duplicate still works on it
    assert client.patch(f"/webhooks/{duplicate}", json={"events": ["sent"]}, headers=auth).status_code == 200
    assert client.patch(f"/webhooks/{duplicate}", json={"url": PUBLIC + "/own"}, headers=auth).status_code == 200
    assert client.patch(f"/webhooks/{duplicate}", json={"enabled": True}, headers=auth).status_code == 200
