"""Settings.from_env: SPEC section 1's names and defaults, every variable read, bad values refused."""

from __future__ import annotations

import dataclasses

import pytest

from mailer.config import MIB, ConfigError, Settings


def test_the_defaults_are_those_of_the_spec():
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.mailjet_api_url == "https://api.mailjet.com"
    assert (settings.mailjet_api_key, settings.mailjet_api_secret) == (None, None)
    assert settings.events_auth is None
    assert settings.webhook_allow_private is False
    assert settings.port == 8000
    assert settings.max_body_bytes == 20 * MIB == 20_971_520
    assert settings.send_max_attempts == 8
    assert (settings.send_backoff_base_s, settings.send_backoff_cap_s) == (2, 600)
    assert settings.webhook_retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)


def test_the_environment_defaults_equal_the_dataclass_defaults():
    assert Settings.from_env({}) == Settings()


def test_blank_values_mean_unset():
    blank = {name: "  " for name in ("DATABASE_URL", "MAILJET_API_URL", "MAILER_EVENTS_AUTH", "PORT",
                                     "MAILER_WEBHOOK_RETRY_SCHEDULE", "MAILER_WEBHOOK_ALLOW_PRIVATE")}
    assert Settings.from_env(blank) == Settings()


ENV = {
    "DATABASE_URL": "postgresql://u:p@db:5432/mailer",
    "MAILER_DIRECT_DATABASE_URL": "postgresql://u:p@db-direct:5432/mailer",
    "MAILJET_API_URL": "http://127.0.0.1:9999/",
    "MAILJET_API_KEY": "pub",
    "MAILJET_API_SECRET": "priv",
    "MAILER_MAILJET_TIMEOUT_S": "7.5",
    "MAILER_EVENTS_AUTH": "mj:pw",
    "MAILER_WEBHOOK_ALLOW_PRIVATE": "1",
    "PORT": "9000",
    "MAILER_MAX_BODY_BYTES": "1024",
    "MAILER_SEND_MAX_ATTEMPTS": "3",
    "MAILER_SEND_BACKOFF_BASE_S": "0.5",
    "MAILER_SEND_BACKOFF_CAP_S": "30",
    "MAILER_SEND_BATCH_SIZE": "20",
    "MAILER_SEND_MAX_CALL_BYTES": "1048576",
    "MAILER_WEBHOOK_RETRY_SCHEDULE": "1,2,3",
    "MAILER_WORKER_CONCURRENCY": "4",
    "MAILER_DB_POOL_SIZE": "3",
    "MAILER_DB_TIMEOUT_S": "1.5",
    "MAILER_DB_CONNECT_TIMEOUT_S": "3",
    "MAILER_WEB_HEADER_TIMEOUT_S": "2.5",
    "MAILER_WEB_REQUEST_TIMEOUT_S": "20",
    "MAILER_WEB_SEND_TIMEOUT_S": "7",
    "MAILER_WEB_MAX_HEADER_BYTES": "16384",
    "MAILER_WEB_MAX_CONNECTIONS": "100",
    "MAILER_WEB_MAX_BUFFERED_BYTES": "33554432",
}


def test_every_variable_is_read():
    read = dataclasses.asdict(Settings.from_env(ENV))
    expected = {
        "database_url": "postgresql://u:p@db:5432/mailer",
        "direct_database_url": "postgresql://u:p@db-direct:5432/mailer",
        "mailjet_api_url": "http://127.0.0.1:9999",  # the trailing slash is dropped
        "mailjet_api_key": "pub",
        "mailjet_api_secret": "priv",
        "mailjet_timeout_s": 7.5,
        "events_auth": "mj:pw",
        "webhook_allow_private": True,
        "port": 9000,
        "max_body_bytes": 1024,
        "send_max_attempts": 3,
        "send_backoff_base_s": 0.5,
        "send_backoff_cap_s": 30.0,
        "send_batch_size": 20,
        "send_max_call_bytes": 1048576,
        "webhook_retry_schedule": (1, 2, 3),
        "worker_concurrency": 4,
        "db_pool_size": 3,
        "db_timeout_s": 1.5,
        "db_connect_timeout_s": 3,
        "web_header_timeout_s": 2.5,
        "web_request_timeout_s": 20.0,
        "web_send_timeout_s": 7.0,
        "web_max_header_bytes": 16384,
        "web_max_connections": 100,
        "web_max_buffered_bytes": 32 * 1024 * 1024,
    }
    assert {name: read[name] for name in expected} == expected


@pytest.mark.parametrize("name", sorted(ENV))
def test_each_variable_changes_its_setting(name):
    assert Settings.from_env({name: ENV[name]}) != Settings.from_env({})


def test_surrounding_whitespace_is_ignored():
    assert Settings.from_env({"PORT": " 9000\n", "MAILER_EVENTS_AUTH": " mj:pw "}).port == 9000
    assert Settings.from_env({"MAILER_EVENTS_AUTH": " mj:pw "}).events_auth == "mj:pw"


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("YES", True), ("0", False),
                                               ("false", False), ("no", False), ("", False)])
def test_the_allow_private_flag(raw, expected):
    assert Settings.from_env({"MAILER_WEBHOOK_ALLOW_PRIVATE": raw}).webhook_allow_private is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("5,300,1800", (5, 300, 1800)), ("60", (60,)), (" 5 , 10 ", (5, 10)), ("0,0", (0, 0))],
)
def test_the_webhook_retry_schedule_is_parsed(raw, expected):
    assert Settings.from_env({"MAILER_WEBHOOK_RETRY_SCHEDULE": raw}).webhook_retry_schedule == expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PORT", "eighty"),
        ("PORT", "0"),
        ("PORT", "80.5"),
        ("MAILER_MAX_BODY_BYTES", "20MiB"),
        ("MAILER_MAX_BODY_BYTES", "0"),
        ("MAILER_MAX_BODY_BYTES", "-1"),
        ("MAILER_SEND_MAX_ATTEMPTS", "0"),
        ("MAILER_SEND_MAX_ATTEMPTS", "many"),
        ("MAILER_SEND_BACKOFF_BASE_S", "-1"),
        ("MAILER_SEND_BACKOFF_BASE_S", "two"),
        ("MAILER_SEND_BACKOFF_CAP_S", "-0.5"),
        ("MAILER_MAILJET_TIMEOUT_S", "soon"),
        ("MAILER_SEND_BATCH_SIZE", "51"),
        ("MAILER_SEND_BATCH_SIZE", "0"),
        ("MAILER_SEND_MAX_CALL_BYTES", "1023"),
        ("MAILER_SEND_MAX_CALL_BYTES", "5MiB"),
        ("MAILER_WORKER_CONCURRENCY", "0"),
        ("MAILER_DB_POOL_SIZE", "0"),
        ("MAILER_DB_TIMEOUT_S", "-1"),
        ("MAILER_DB_CONNECT_TIMEOUT_S", "1"),  # libpq would make it 2 without saying so
        ("MAILER_DB_CONNECT_TIMEOUT_S", "2.5"),  # libpq counts whole seconds
        ("MAILER_DB_CONNECT_TIMEOUT_S", "0"),  # libpq would wait forever
        ("MAILER_WEBHOOK_ALLOW_PRIVATE", "maybe"),
        ("MAILER_WEBHOOK_ALLOW_PRIVATE", "2"),
        ("MAILER_WEBHOOK_RETRY_SCHEDULE", "5,,300"),
        ("MAILER_WEBHOOK_RETRY_SCHEDULE", ","),
        ("MAILER_WEBHOOK_RETRY_SCHEDULE", "5,-1"),
        ("MAILER_WEBHOOK_RETRY_SCHEDULE", "5 min"),
        ("MAILER_WEBHOOK_RETRY_SCHEDULE", "1.5"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_a_non_finite_number_is_a_config_error(raw):
    with pytest.raises(ConfigError):
        Settings.from_env({"MAILER_SEND_BACKOFF_BASE_S": raw})


def test_a_port_above_65535_is_a_config_error():
    with pytest.raises(ConfigError):
        Settings.from_env({"PORT": "70000"})


@pytest.mark.parametrize("name", ["MAILER_DB_TIMEOUT_S", "MAILER_MAILJET_TIMEOUT_S"])
def test_a_zero_timeout_is_a_config_error(name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "0"})


def test_the_connect_timeout_defaults_to_five_seconds():
    assert Settings.from_env({}).db_connect_timeout_s == 5


def test_stalled_after_must_exceed_the_mailjet_timeout():
    with pytest.raises(ConfigError, match="MAILER_SEND_STALLED_AFTER_S"):
        Settings.from_env({"MAILER_MAILJET_TIMEOUT_S": "30", "MAILER_SEND_STALLED_AFTER_S": "20"})
    assert Settings.from_env({"MAILER_SEND_STALLED_AFTER_S": "45"}).send_stalled_after_s == 45


def test_the_sender_liveness_settings_are_read_and_checked():
    defaults = Settings.from_env({})
    assert (defaults.send_call_window_s, defaults.send_reconnect_grace_s, defaults.send_lease_s) == (50, 4, 300)
    read = Settings.from_env(
        {"MAILER_SEND_CALL_WINDOW_S": "20", "MAILER_SEND_RECONNECT_GRACE_S": "4.5", "MAILER_SEND_LEASE_S": "90"}
    )
    assert (read.send_call_window_s, read.send_reconnect_grace_s, read.send_lease_s) == (20, 4.5, 90)
    for name in ("MAILER_SEND_CALL_WINDOW_S", "MAILER_SEND_RECONNECT_GRACE_S", "MAILER_SEND_LEASE_S"):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: "0"})
    with pytest.raises(ConfigError, match="MAILER_SEND_LEASE_S"):  # a live worker between two heartbeats is not hung
        Settings.from_env({"MAILER_SEND_RECONNECT_GRACE_S": "10", "MAILER_SEND_LEASE_S": "5"})


def test_the_listing_delay_is_read_and_bounded():
    assert Settings.from_env({}).send_listing_delay_s == 10
    assert Settings.from_env({"MAILER_SEND_LISTING_DELAY_S": "0"}).send_listing_delay_s == 0
    assert Settings.from_env({"MAILER_SEND_LISTING_DELAY_S": "2.5"}).send_listing_delay_s == 2.5
    for bad in ("-1", "nan", "x", "601"):
        with pytest.raises(ConfigError, match="MAILER_SEND_LISTING_DELAY_S"):
            Settings.from_env({"MAILER_SEND_LISTING_DELAY_S": bad})


def test_the_lease_must_outlast_a_slow_live_claim():
    # A claim lives up to its call window, one Mailjet timeout, its recording's retries and a margin; the
    # defaults fit (300 > 50 + 30 + 5 + 30).
    assert Settings.from_env({}).send_claim_bound_s == 115
    assert Settings.from_env({"MAILER_SEND_LEASE_S": "116"}).send_lease_s == 116
    with pytest.raises(ConfigError, match=r"MAILER_SEND_LEASE_S .*MAILER_SEND_CALL_WINDOW_S .*MAILER_MAILJET_TIMEOUT"):
        Settings.from_env({"MAILER_SEND_LEASE_S": "115"})
    with pytest.raises(ConfigError, match="MAILER_DB_TIMEOUT_S"):
        Settings.from_env({"MAILER_SEND_LEASE_S": "116", "MAILER_DB_TIMEOUT_S": "6"})
    with pytest.raises(ConfigError, match="MAILER_SEND_LEASE_S"):
        Settings.from_env({"MAILER_SEND_CALL_WINDOW_S": "250", "MAILER_MAILJET_TIMEOUT_S": "30"})


def test_the_reconnect_grace_must_span_four_heartbeats():
    assert Settings.from_env({"MAILER_SEND_RECONNECT_GRACE_S": "4"}).send_reconnect_grace_s == 4
    with pytest.raises(ConfigError, match=r"MAILER_SEND_RECONNECT_GRACE_S .*four heartbeats"):
        Settings.from_env({"MAILER_SEND_RECONNECT_GRACE_S": "3.5"})


def test_the_direct_url_defaults_to_database_url_and_makes_it_pooled_only_when_it_differs():
    plain = Settings.from_env({"DATABASE_URL": "postgresql://pgbouncer/mailer"})
    assert plain.require_direct_database_url() == "postgresql://pgbouncer/mailer"
    assert not plain.database_pooled
    same = Settings.from_env({"DATABASE_URL": "postgresql:///x", "MAILER_DIRECT_DATABASE_URL": "postgresql:///x"})
    assert not same.database_pooled
    pooled = Settings.from_env({"DATABASE_URL": "postgresql://pgbouncer:6432/mailer",
                                "MAILER_DIRECT_DATABASE_URL": "postgresql://db:5432/mailer"})
    assert pooled.database_pooled
    assert pooled.require_direct_database_url() == "postgresql://db:5432/mailer"
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env({}).require_direct_database_url()


def test_a_missing_database_url_is_a_clear_error():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env({}).require_database_url()
    assert Settings.from_env({"DATABASE_URL": "postgresql:///x"}).require_database_url() == "postgresql:///x"


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_the_rate_limit_settings():
    defaults = Settings.from_env({})
    assert (defaults.rate_limit_per_s, defaults.rate_limit_burst, defaults.mailjet_max_calls_per_s) == (500, 1000, 100)
    read = Settings.from_env(
        {"MAILER_RATE_LIMIT_PER_S": "2.5", "MAILER_RATE_LIMIT_BURST": "7", "MAILER_MAILJET_MAX_CALLS_PER_S": "40"}
    )
    assert (read.rate_limit_per_s, read.rate_limit_burst, read.mailjet_max_calls_per_s) == (2.5, 7, 40)
    off = Settings.from_env({"MAILER_RATE_LIMIT_PER_S": "0", "MAILER_MAILJET_MAX_CALLS_PER_S": "0"})
    assert (off.rate_limit_per_s, off.mailjet_max_calls_per_s) == (0, 0)  # 0 turns a limit off


def test_the_request_token_lease_is_read_and_bounded():
    assert Settings.from_env({}).rate_limit_lease_ms == 100
    assert Settings.from_env({"MAILER_RATE_LIMIT_LEASE_MS": "0"}).rate_limit_lease_ms == 0  # a statement a request
    assert Settings.from_env({"MAILER_RATE_LIMIT_LEASE_MS": "1000"}).rate_limit_lease_ms == 1000
    for raw in ("-1", "1001", "0.5", "soon"):
        with pytest.raises(ConfigError, match="MAILER_RATE_LIMIT_LEASE_MS"):
            Settings.from_env({"MAILER_RATE_LIMIT_LEASE_MS": raw})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MAILER_RATE_LIMIT_PER_S", "-1"),
        ("MAILER_RATE_LIMIT_PER_S", "lots"),
        ("MAILER_RATE_LIMIT_PER_S", "inf"),
        ("MAILER_RATE_LIMIT_BURST", "0"),
        ("MAILER_RATE_LIMIT_BURST", "1.5"),
        ("MAILER_MAILJET_MAX_CALLS_PER_S", "-5"),
        ("MAILER_MAILJET_MAX_CALLS_PER_S", "nan"),
    ],
)
def test_a_bad_rate_limit_is_a_config_error_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


def test_the_mailjet_lookup_concurrency():
    assert Settings.from_env({}).mailjet_lookup_concurrency == 10
    assert Settings.from_env({"MAILER_MAILJET_LOOKUP_CONCURRENCY": "50"}).mailjet_lookup_concurrency == 50
    assert Settings.from_env({"MAILER_MAILJET_LOOKUP_CONCURRENCY": "1"}).mailjet_lookup_concurrency == 1
    for raw in ("0", "51", "2.5", "many"):  # a claim has at most 50 jobs to look up
        with pytest.raises(ConfigError, match="MAILER_MAILJET_LOOKUP_CONCURRENCY"):
            Settings.from_env({"MAILER_MAILJET_LOOKUP_CONCURRENCY": raw})


def test_the_dashboard_and_metrics_settings():
    defaults = Settings.from_env({})
    assert defaults.dashboard_session_lifetime_s == 12 * 3600
    assert defaults.dashboard_cookie_secure is True  # only `mailer dev` turns it off
    assert (defaults.dashboard_logins_per_address_per_min, defaults.dashboard_logins_per_min) == (10, 60)
    assert defaults.metrics_db_interval_s == 10
    read = Settings.from_env({
        "MAILER_DASHBOARD_SESSION_LIFETIME_S": "3600", "MAILER_DASHBOARD_COOKIE_SECURE": "0",
        "MAILER_DASHBOARD_LOGINS_PER_ADDRESS_PER_MIN": "5", "MAILER_DASHBOARD_LOGINS_PER_MIN": "30",
        "MAILER_METRICS_DB_INTERVAL_S": "0",
    })
    assert (read.dashboard_session_lifetime_s, read.dashboard_cookie_secure) == (3600, False)
    assert (read.dashboard_logins_per_address_per_min, read.dashboard_logins_per_min) == (5, 30)
    assert read.metrics_db_interval_s == 0  # every scrape reads the database
    assert Settings.from_env({"MAILER_DASHBOARD_COOKIE_SECURE": "1"}).dashboard_cookie_secure is True


def test_the_template_preview_of_the_dashboard_takes_bounded_variables():
    assert Settings.from_env({}).dashboard_preview_max_bytes == 4096
    assert Settings.from_env({"MAILER_DASHBOARD_PREVIEW_MAX_BYTES": "65536"}).dashboard_preview_max_bytes == 65536
    for raw in ("1", str(2 * MIB), "big"):
        with pytest.raises(ConfigError, match="MAILER_DASHBOARD_PREVIEW_MAX_BYTES"):
            Settings.from_env({"MAILER_DASHBOARD_PREVIEW_MAX_BYTES": raw})
def test_trusted_proxy_hops_default_to_none_and_are_bounded():
    assert Settings.from_env({}).trusted_proxy_hops == 0  # X-Forwarded-For ignored unless told
    assert Settings.from_env({"MAILER_TRUSTED_PROXY_HOPS": "2"}).trusted_proxy_hops == 2
    for raw in ("-1", "6", "one"):
        with pytest.raises(ConfigError, match="MAILER_TRUSTED_PROXY_HOPS"):
            Settings.from_env({"MAILER_TRUSTED_PROXY_HOPS": raw})


FERNET_KEY = "x" * 43 + "="  # url-safe base64 of 32 bytes


def test_the_webhook_settings_of_issue_17():
    defaults = Settings.from_env({})
    assert (defaults.webhook_max_endpoints, defaults.webhook_host_rate_per_s, defaults.webhook_dns_timeout_s,
            defaults.webhook_expand_batch, defaults.webhook_secret_keys) == (10, 20, 2, 1000, ())
    read = Settings.from_env({
        "MAILER_WEBHOOK_MAX_ENDPOINTS": "3", "MAILER_WEBHOOK_HOST_RATE_PER_S": "0.5",
        "MAILER_WEBHOOK_DNS_TIMEOUT_S": "0.25", "MAILER_WEBHOOK_EXPAND_BATCH": "50",
        "MAILER_WEBHOOK_SECRET_KEYS": f" {FERNET_KEY} , {'y' * 43}= ",
    })
    assert (read.webhook_max_endpoints, read.webhook_host_rate_per_s, read.webhook_dns_timeout_s,
            read.webhook_expand_batch) == (3, 0.5, 0.25, 50)
    assert read.webhook_secret_keys == (FERNET_KEY, "y" * 43 + "=")
    assert FERNET_KEY not in repr(read)


def test_the_per_app_webhook_concurrency():
    from mailer.services.webhook_delivery import per_app_limit

    assert Settings.from_env({}).webhook_app_concurrency == 0
    assert per_app_limit(Settings.from_env({})) == 16  # half of MAILER_WEBHOOK_CONCURRENCY (32)
    assert per_app_limit(Settings.from_env({"MAILER_WEBHOOK_CONCURRENCY": "1"})) == 1
    assert per_app_limit(Settings.from_env({"MAILER_WEBHOOK_APP_CONCURRENCY": "5"})) == 5
    with pytest.raises(ConfigError, match="MAILER_WEBHOOK_APP_CONCURRENCY"):
        Settings.from_env({"MAILER_WEBHOOK_APP_CONCURRENCY": "-1"})


def test_the_webhook_resolver_threads():
    assert Settings.from_env({}).webhook_dns_threads == 16
    assert Settings.from_env({"MAILER_WEBHOOK_DNS_THREADS": "64"}).webhook_dns_threads == 64
    for wrong in ("0", "65", "many"):
        with pytest.raises(ConfigError, match="MAILER_WEBHOOK_DNS_THREADS"):
            Settings.from_env({"MAILER_WEBHOOK_DNS_THREADS": wrong})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MAILER_DASHBOARD_SESSION_LIFETIME_S", "0"),
        ("MAILER_DASHBOARD_SESSION_LIFETIME_S", "forever"),
        ("MAILER_DASHBOARD_COOKIE_SECURE", "maybe"),
        ("MAILER_DASHBOARD_LOGINS_PER_ADDRESS_PER_MIN", "-1"),
        ("MAILER_DASHBOARD_LOGINS_PER_MIN", "inf"),
        ("MAILER_METRICS_DB_INTERVAL_S", "-2"),
    ],
)
def test_a_bad_dashboard_or_metrics_setting_is_a_config_error_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MAILER_WEBHOOK_MAX_ENDPOINTS", "0"),
        ("MAILER_WEBHOOK_MAX_ENDPOINTS", "ten"),
        ("MAILER_WEBHOOK_HOST_RATE_PER_S", "-1"),
        ("MAILER_WEBHOOK_DNS_TIMEOUT_S", "0"),
        ("MAILER_WEBHOOK_EXPAND_BATCH", "0"),
        ("MAILER_WEBHOOK_SECRET_KEYS", "not-a-key"),
        ("MAILER_WEBHOOK_SECRET_KEYS", f"{FERNET_KEY},short"),
    ],
)
def test_a_bad_webhook_setting_is_a_config_error_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=name) as raised:
        Settings.from_env({name: raw})
    assert "short" not in str(raised.value)  # a key is never quoted


def test_the_hostile_input_limits():
    defaults = Settings.from_env({})
    assert (defaults.max_json_depth, defaults.events_chunk_size, defaults.schedule_max_past_days) == (32, 1000, 366)
    read = Settings.from_env(
        {"MAILER_MAX_JSON_DEPTH": "64", "MAILER_EVENTS_CHUNK_SIZE": "50", "MAILER_SCHEDULE_MAX_PAST_DAYS": "0"}
    )
    assert (read.max_json_depth, read.events_chunk_size, read.schedule_max_past_days) == (64, 50, 0)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MAILER_MAX_JSON_DEPTH", "7"),  # a schedule needs 4 levels before its metadata starts
        ("MAILER_MAX_JSON_DEPTH", "201"),  # deeper reaches Python's recursion limit in the encoders
        ("MAILER_MAX_JSON_DEPTH", "deep"),
        ("MAILER_EVENTS_CHUNK_SIZE", "0"),
        ("MAILER_EVENTS_CHUNK_SIZE", "100001"),
        ("MAILER_SCHEDULE_MAX_PAST_DAYS", "-1"),
        ("MAILER_SCHEDULE_MAX_PAST_DAYS", "3661"),
    ],
)
def test_a_bad_hostile_input_limit_is_a_config_error_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


SECRETS = {
    "DATABASE_URL": "postgresql://mailer:db-pass-1f3a@db:5432/mailer?sslmode=require",
    "MAILER_DIRECT_DATABASE_URL": "host=db user=mailer password=direct-pass-7c2e",
    "DATABASE_REPLICA_URL": "postgresql://mailer@replica/mailer?password=replica-pass-9d4b",
    "MAILJET_API_URL": "https://user:url-pass-3e8f@api.mailjet.test",
    "MAILJET_API_KEY": "mj-public-key-5a1c",
    "MAILJET_API_SECRET": "mj-secret-6b2d",
    "MAILER_EVENTS_AUTH": "mailjet:events-pass-8e0a",
    "MAILER_OPERATOR_TOKEN": "operator-token-2c9f-0123456789",
    "MAILER_SECRET_KEY": "secret-key-4d7e",
}


def test_no_secret_shows_in_the_repr_or_str_of_settings():
    settings = Settings.from_env(SECRETS)
    assert settings.mailjet_api_secret == "mj-secret-6b2d"  # read, only hidden when shown
    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}", repr([settings])):
        for secret in ("db-pass-1f3a", "direct-pass-7c2e", "replica-pass-9d4b", "url-pass-3e8f", "mj-secret-6b2d",
                       "events-pass-8e0a", "operator-token-2c9f", "secret-key-4d7e", "mj-public-key-5a1c"):
            assert secret not in shown
    assert "postgresql://mailer:***@db:5432/mailer?sslmode=require" in repr(settings)
    assert "max_body_bytes=20971520" in repr(settings)  # the rest stays readable


@pytest.mark.parametrize(
    "url",
    ["host=db user=mailer password=kw-pass-1a2b dbname=mailer", "host=db password = 'kw-pass-1a2b with spaces'",
     "postgresql://mailer:kw-pass-1a2b@db/mailer", "postgresql://db/mailer?user=x&password=kw-pass-1a2b"],
)
def test_no_form_of_database_url_shows_its_password(url):
    shown = repr(Settings.from_env({"DATABASE_URL": url}))
    assert "kw-pass-1a2b" not in shown
    assert "***" in shown


def test_the_web_tier_limits():
    settings = Settings.from_env({})
    assert (settings.web_header_timeout_s, settings.web_request_timeout_s, settings.web_send_timeout_s) == (10, 60, 30)
    assert (settings.web_max_header_bytes, settings.web_max_connections) == (64 * 1024, 250)
    assert settings.web_max_buffered_bytes == 256 * 1024 * 1024


@pytest.mark.parametrize(("name", "raw"), [
    ("MAILER_WEB_HEADER_TIMEOUT_S", "0"),
    ("MAILER_WEB_REQUEST_TIMEOUT_S", "-1"),
    ("MAILER_WEB_SEND_TIMEOUT_S", "soon"),
    ("MAILER_WEB_MAX_HEADER_BYTES", "100"),  # below 1 KiB: no real request fits
    ("MAILER_WEB_MAX_CONNECTIONS", "0"),
    ("MAILER_WEB_MAX_BUFFERED_BYTES", "0"),
])
def test_a_bad_web_tier_limit_is_a_config_error_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


def test_the_session_timeouts_of_issue_19_are_read_and_bounded():
    defaults = Settings.from_env({})
    assert (defaults.db_statement_timeout_s, defaults.db_idle_in_transaction_timeout_s) == (60, 60)
    read = Settings.from_env({"MAILER_DB_STATEMENT_TIMEOUT_S": "30", "MAILER_DB_IDLE_IN_TRANSACTION_TIMEOUT_S": "9"})
    assert (read.db_statement_timeout_s, read.db_idle_in_transaction_timeout_s) == (30, 9)
    for name in ("MAILER_DB_STATEMENT_TIMEOUT_S", "MAILER_DB_IDLE_IN_TRANSACTION_TIMEOUT_S"):
        for bad in ("0", "-1", "1.5", "86401", "x"):  # 0 would turn Postgres's timeout off
            with pytest.raises(ConfigError, match=name):
                Settings.from_env({name: bad})


def test_the_claim_floor_settings_are_read_and_bounded():
    defaults = Settings.from_env({})
    assert (defaults.send_claim_floor_margin_s, defaults.send_claim_full_scan_s) == (2.0, 10.0)
    read = Settings.from_env({"MAILER_SEND_CLAIM_FLOOR_MARGIN_S": "0.5", "MAILER_SEND_CLAIM_FULL_SCAN_S": "60"})
    assert (read.send_claim_floor_margin_s, read.send_claim_full_scan_s) == (0.5, 60.0)
    for name, bad in (("MAILER_SEND_CLAIM_FLOOR_MARGIN_S", "0"), ("MAILER_SEND_CLAIM_FLOOR_MARGIN_S", "301"),
                      ("MAILER_SEND_CLAIM_FULL_SCAN_S", "0.5"), ("MAILER_SEND_CLAIM_FULL_SCAN_S", "3601"),
                      ("MAILER_SEND_CLAIM_FULL_SCAN_S", "nan")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: bad})


def test_the_running_sender_settings_are_read_and_bounded():
    defaults = Settings.from_env({})
    assert (defaults.send_run_max_s, defaults.send_linger_ms, defaults.send_handoff_wait_ms) == (10.0, 100, 500)
    read = Settings.from_env({"MAILER_SEND_RUN_MAX_S": "0", "MAILER_SEND_LINGER_MS": "0",
                              "MAILER_SEND_HANDOFF_WAIT_MS": "0"})
    assert (read.send_run_max_s, read.send_linger_ms, read.send_handoff_wait_ms) == (0.0, 0, 0)
    read = Settings.from_env({"MAILER_SEND_RUN_MAX_S": "2.5", "MAILER_SEND_LINGER_MS": "250",
                              "MAILER_SEND_HANDOFF_WAIT_MS": "1000"})
    assert (read.send_run_max_s, read.send_linger_ms, read.send_handoff_wait_ms) == (2.5, 250, 1000)
    for name, bad in (("MAILER_SEND_RUN_MAX_S", "-1"), ("MAILER_SEND_RUN_MAX_S", "601"),
                      ("MAILER_SEND_LINGER_MS", "1001"), ("MAILER_SEND_LINGER_MS", "0.5"),
                      ("MAILER_SEND_HANDOFF_WAIT_MS", "10001"), ("MAILER_SEND_HANDOFF_WAIT_MS", "-1")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: bad})
    # A wake-up that gave up before the running sender's next claim could begin would always claim itself.
    with pytest.raises(ConfigError, match="MAILER_SEND_HANDOFF_WAIT_MS"):
        Settings.from_env({"MAILER_SEND_LINGER_MS": "300", "MAILER_SEND_HANDOFF_WAIT_MS": "300"})


def test_the_partition_settings_are_read_and_bounded():
    defaults = Settings.from_env({})
    assert (defaults.partitions_ahead_months, defaults.partition_lock_timeout_ms) == (3, 1000)
    read = Settings.from_env({"MAILER_PARTITIONS_AHEAD_MONTHS": "12", "MAILER_PARTITION_LOCK_TIMEOUT_MS": "250"})
    assert (read.partitions_ahead_months, read.partition_lock_timeout_ms) == (12, 250)
    for name, raw in (("MAILER_PARTITIONS_AHEAD_MONTHS", "0"), ("MAILER_PARTITIONS_AHEAD_MONTHS", "25"),
                      ("MAILER_PARTITION_LOCK_TIMEOUT_MS", "5"), ("MAILER_PARTITION_LOCK_TIMEOUT_MS", "soon")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: raw})


def test_the_read_replica_settings():
    defaults = Settings.from_env({})
    assert defaults.database_replica_url is None  # listings read the primary
    assert (defaults.replica_timeout_s, defaults.replica_max_lag_s) == (1.0, 30.0)
    assert (defaults.replica_check_interval_s, defaults.replica_retry_s) == (1.0, 5.0)
    read = Settings.from_env({
        "DATABASE_REPLICA_URL": "postgresql://mailer@replica/mailer", "MAILER_REPLICA_TIMEOUT_S": "0.5",
        "MAILER_REPLICA_MAX_LAG_S": "10", "MAILER_REPLICA_CHECK_INTERVAL_S": "2", "MAILER_REPLICA_RETRY_S": "30",
    })
    assert read.database_replica_url == "postgresql://mailer@replica/mailer"
    assert (read.replica_timeout_s, read.replica_max_lag_s) == (0.5, 10.0)
    assert (read.replica_check_interval_s, read.replica_retry_s) == (2.0, 30.0)
    for name in ("MAILER_REPLICA_TIMEOUT_S", "MAILER_REPLICA_MAX_LAG_S", "MAILER_REPLICA_CHECK_INTERVAL_S",
                 "MAILER_REPLICA_RETRY_S"):
        for raw in ("0", "-1", "soon", "inf"):
            with pytest.raises(ConfigError, match=name):
                Settings.from_env({name: raw})
    # A lag is seen up to one check late: the checks must come more often than the lag allowed.
    with pytest.raises(ConfigError, match="MAILER_REPLICA_CHECK_INTERVAL_S"):
        Settings.from_env({"MAILER_REPLICA_MAX_LAG_S": "5", "MAILER_REPLICA_CHECK_INTERVAL_S": "5"})


def test_the_stored_template_bounds_of_issue_21():
    defaults = Settings.from_env({})
    assert (defaults.template_max_per_app, defaults.template_max_versions, defaults.template_cache_size,
            defaults.template_request_render_ms, defaults.template_cache_bytes) == (1000, 100, 256, 2000, 4 << 20)
    read = Settings.from_env({
        "MAILER_TEMPLATE_MAX_PER_APP": "5", "MAILER_TEMPLATE_MAX_VERSIONS": "2", "MAILER_TEMPLATE_CACHE_SIZE": "0",
        "MAILER_TEMPLATE_REQUEST_RENDER_MS": "50", "MAILER_TEMPLATE_CACHE_BYTES": "0",
    })
    assert read.template_cache_bytes == 0
    assert (read.template_max_per_app, read.template_max_versions, read.template_cache_size,
            read.template_request_render_ms) == (5, 2, 0, 50)
    for name, raw in (("MAILER_TEMPLATE_MAX_PER_APP", "0"), ("MAILER_TEMPLATE_MAX_VERSIONS", "many"),
                      ("MAILER_TEMPLATE_CACHE_SIZE", "-1"), ("MAILER_TEMPLATE_REQUEST_RENDER_MS", "0"),
                      ("MAILER_TEMPLATE_CACHE_BYTES", "-1")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: raw})


def test_the_template_limits_of_issue_21_are_read_and_bounded():
    from mailer.domain import templating

    defaults = Settings.from_env({})
    assert templating.Limits.from_settings(defaults) == templating.Limits(
        max_source_bytes=128 * 1024, render_timeout_ms=200, max_output_bytes=MIB
    )
    read = Settings.from_env({"MAILER_TEMPLATE_MAX_BYTES": "4096", "MAILER_TEMPLATE_RENDER_TIMEOUT_MS": "50",
                              "MAILER_TEMPLATE_MAX_OUTPUT_BYTES": "65536"})
    assert templating.Limits.from_settings(read) == templating.Limits(4096, 50, 65536)
    for name, raw in (("MAILER_TEMPLATE_MAX_BYTES", "100"), ("MAILER_TEMPLATE_MAX_BYTES", str(5 * MIB)),
                      ("MAILER_TEMPLATE_RENDER_TIMEOUT_MS", "0"), ("MAILER_TEMPLATE_RENDER_TIMEOUT_MS", "10001"),
                      ("MAILER_TEMPLATE_RENDER_TIMEOUT_MS", "soon"), ("MAILER_TEMPLATE_MAX_OUTPUT_BYTES", "10"),
                      ("MAILER_TEMPLATE_MAX_OUTPUT_BYTES", str(17 * MIB))):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: raw})


def test_the_unsubscribe_settings_of_issue_22():
    defaults = Settings.from_env({})
    assert defaults.public_url is None  # bulk mail goes without unsubscribe headers
    assert (defaults.unsubscribes_per_address_per_min, defaults.unsubscribes_per_min) == (30, 600)
    read = Settings.from_env({
        "MAILER_PUBLIC_URL": "https://mail.example.com/base/", "MAILER_UNSUBSCRIBES_PER_ADDRESS_PER_MIN": "3",
        "MAILER_UNSUBSCRIBES_PER_MIN": "0",
    })
    assert read.public_url == "https://mail.example.com/base"  # no trailing slash: links append /unsubscribe/...
    assert (read.unsubscribes_per_address_per_min, read.unsubscribes_per_min) == (3, 0)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MAILER_PUBLIC_URL", "mail.example.com"),
        ("MAILER_PUBLIC_URL", "ftp://mail.example.com"),
        ("MAILER_PUBLIC_URL", "https://user:pw@mail.example.com"),
        ("MAILER_PUBLIC_URL", "https://mail.example.com/?a=1"),
        ("MAILER_PUBLIC_URL", "https://mail.example.com/" + "x" * 200),
        ("MAILER_UNSUBSCRIBES_PER_ADDRESS_PER_MIN", "-1"),
        ("MAILER_UNSUBSCRIBES_PER_MIN", "nan"),
    ],
)
def test_a_bad_unsubscribe_setting_is_a_config_error_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


def test_the_webhook_replay_settings():
    defaults = Settings.from_env({})
    assert (defaults.webhook_replay_max_days, defaults.webhook_replay_in_flight) == (31, 100)
    read = Settings.from_env({"MAILER_WEBHOOK_REPLAY_MAX_DAYS": "7", "MAILER_WEBHOOK_REPLAY_IN_FLIGHT": "20"})
    assert (read.webhook_replay_max_days, read.webhook_replay_in_flight) == (7, 20)
    for name, raw in (("MAILER_WEBHOOK_REPLAY_MAX_DAYS", "0"), ("MAILER_WEBHOOK_REPLAY_IN_FLIGHT", "0"),
                      ("MAILER_WEBHOOK_REPLAY_IN_FLIGHT", "many")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: raw})


def test_the_migration_lock_timeout_is_read_and_bounded():
    assert Settings.from_env({}).migration_lock_timeout_s == 5
    assert Settings.from_env({"MAILER_MIGRATION_LOCK_TIMEOUT_S": "30"}).migration_lock_timeout_s == 30
    for raw in ("0", "601", "1.5"):
        with pytest.raises(ConfigError, match="MAILER_MIGRATION_LOCK_TIMEOUT_S"):
            Settings.from_env({"MAILER_MIGRATION_LOCK_TIMEOUT_S": raw})
