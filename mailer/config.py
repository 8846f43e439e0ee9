"""Settings, read once from the environment (12-factor)."""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import re
import urllib.parse
from collections.abc import Mapping

MIB = 1024 * 1024
MIN_OPERATOR_TOKEN = 16  # it opens every app's dashboard: no guessable short words
# A schedule nests a message in a body (4 levels) before metadata or variables start. Above 200, json.dumps
# and psycopg's recursive encoders come near Python's recursion limit (about 1000 frames).
MIN_JSON_DEPTH, MAX_JSON_DEPTH = 8, 200
# Sender liveness (services/liveness.py): seen_at is renewed this often; a claim may outlive its call window by
# one Mailjet timeout (the last call) and this margin (its claim and its recording) before it counts as hung.
SENDER_HEARTBEAT_S = 1.0
CLAIM_MARGIN_S = 30.0
MAX_PROXY_HOPS = 5  # more proxies than any deployment chains in front of one service
MAX_LISTING_DELAY_S = 600.0  # MAILER_SEND_LISTING_DELAY_S: Mailjet lists within seconds; minutes would stall resends
MAX_SESSION_TIMEOUT_S = 86_400  # MAILER_DB_STATEMENT_TIMEOUT_S, MAILER_DB_IDLE_IN_TRANSACTION_TIMEOUT_S
# MAILER_SEND_CLAIM_FLOOR_MARGIN_S: every claim re-reads what was claimed this long before; the full scan
# (MAILER_SEND_CLAIM_FULL_SCAN_S) is what a job below the floor waits for at most.
MAX_CLAIM_FLOOR_MARGIN_S = 300.0
MIN_CLAIM_FULL_SCAN_S, MAX_CLAIM_FULL_SCAN_S = 1.0, 3600.0
# MAILER_SEND_RUN_MAX_S, MAILER_SEND_LINGER_MS, MAILER_SEND_HANDOFF_WAIT_MS: the running sender holds a worker slot
# for at most the first, and adds at most the second to an email's wait (the third to a wake-up's).
MAX_SEND_RUN_S, MAX_SEND_LINGER_MS, MAX_SEND_HANDOFF_WAIT_MS = 600.0, 1000, 10_000
# MAILER_TEMPLATE_*: a render holds a web thread for its whole timeout, and its output (and the strings it builds
# on the way, domain/templating.py) sits in that process's memory; above these, one app could starve the rest.
MAX_TEMPLATE_BYTES, MAX_TEMPLATE_RENDER_TIMEOUT_MS, MAX_TEMPLATE_OUTPUT_BYTES = 4 * MIB, 10_000, 16 * MIB
# Fields whose value is a credential, and URLs that may carry a password: never in repr or str.
_SECRET_WORDS = ("secret", "token", "auth", "password", "key")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


class ConfigError(ValueError):
    """An environment variable has a value mailer cannot use."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything mailer's processes read from the environment."""

    database_url: str | None = None
    # A direct (not pooled) connection for what is session-scoped: the sender liveness lock, LISTEN, migrations.
    # Set and different from database_url, DATABASE_URL is taken to be PgBouncer in transaction mode.
    direct_database_url: str | None = None
    # A streaming replica for the read-only listings (services/read_replica.py); None: they read the primary.
    database_replica_url: str | None = None
    mailjet_api_url: str = "https://api.mailjet.com"
    mailjet_api_key: str | None = None
    mailjet_api_secret: str | None = None
    mailjet_timeout_s: float = 30.0
    events_auth: str | None = None
    webhook_allow_private: bool = False
    port: int = 8000
    max_body_bytes: int = 20 * MIB
    # Nesting of a JSON body (a top-level object is 1): no message, schedule or Mailjet event comes near
    # it, and what nests deeper is refused by the parser before any code walks it recursively.
    max_json_depth: int = 32
    # POST /events stores a grouped array this many events per transaction, so a huge POST never holds
    # one long transaction (a chunk that fails after earlier ones committed is safe: duplicates apply once).
    events_chunk_size: int = 1000
    # A schedule's start_at may lie at most this far in the past: each occurrence is computed by walking the
    # rule from its start, so an older start makes every computation slower (services/scheduling.py).
    schedule_max_past_days: int = 366
    # The web worker (mailer/web/worker.py): how long a request may take to arrive (headers, then the whole
    # request, from its first byte), how long a client may take to take its response, and the size of the
    # request line and headers together.
    web_header_timeout_s: float = 10.0
    web_request_timeout_s: float = 60.0
    web_send_timeout_s: float = 30.0
    web_max_header_bytes: int = 64 * 1024
    web_max_connections: int = 250
    # Request bytes one web process holds while reading requests (503 beyond; never below one largest request).
    web_max_buffered_bytes: int = 256 * MIB
    send_max_attempts: int = 8
    send_backoff_base_s: float = 2.0
    send_backoff_cap_s: float = 600.0
    send_batch_size: int = 50
    # The message bytes one Mailjet call carries (JSON text, summed at claim time); a message bigger than this
    # goes alone. Well under Mailjet's own limits (15 MB of attachments per message), and it bounds what a
    # send task holds in memory.
    send_max_call_bytes: int = 5 * MIB
    # A claim made before sender liveness (jobs.claimed_by NULL: a worker of the previous release) older than
    # this belongs to a dead worker. Must exceed the Mailjet timeout, as that release required.
    send_stalled_after_s: float = 90.0
    # A claim's Mailjet calls (lookups, the call, the one-by-one resend after a global 4xx) start no later than
    # this after the claim; jobs not tried by then go back to the queue, so a claim holds jobs for a bounded time.
    send_call_window_s: float = 50.0
    # Mailjet lists an accepted message in /v3/REST/message only some time later: a lookup that does not find an
    # attempt younger than this looks again once it is this old, instead of resending (services/send_calls.py).
    send_listing_delay_s: float = 10.0
    # Sender liveness (services/liveness.py, services/recovery.py): a sender whose lock nobody holds is dead once
    # it has not been seen for the grace (counted from the database's start at the earliest, so live workers can
    # take their locks back after a restart); one whose lock is held but that has not been seen for the lease
    # is hung. Either is taken over. A sender starts no Mailjet call unless seen within half the grace.
    # The lease must exceed a claim's longest legitimate life (send_claim_bound_s), so that a slow claim never
    # loses it; the grace must span a few heartbeats (SENDER_HEARTBEAT_S), or the gate would close between two.
    send_reconnect_grace_s: float = 4.0
    send_lease_s: float = 300.0
    webhook_retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    # Outbound webhooks (services/webhook_delivery.py): the whole of one attempt, the posts one worker
    # process runs at once, and how long an endpoint may fail without a success before it is disabled.
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 32
    webhook_app_concurrency: int = 0  # posts in flight per app, all workers together; 0: half of the above
    webhook_disable_after_s: float = 3 * 24 * 3600.0
    # Issue 17: endpoints one app may have; posts a second to one subscriber host (a token bucket in
    # Postgres; 0 = no limit); the bound on resolving a subscriber's host name; deliveries one expansion
    # of the fan-out writes per transaction; the Fernet keys of the secrets at rest (first encrypts).
    webhook_max_endpoints: int = 10
    webhook_host_rate_per_s: float = 20.0
    webhook_dns_timeout_s: float = 2.0
    webhook_dns_threads: int = 16  # resolver threads a process has for subscriber host names; an app a quarter
    webhook_expand_batch: int = 1000
    # Issue 22, replay by window: the longest window one replay may span, and the replayed deliveries of an
    # endpoint waiting unattempted at once (live ones queue behind at most that many).
    webhook_replay_max_days: int = 31
    webhook_replay_in_flight: int = 100
    webhook_secret_keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    # Issue 21, stored templates (services/templates.py): live templates one app may have; versions one template
    # may have (GET /templates/{id} shows them all); compiled versions each process keeps (about 50 KB each
    # for a 3 KB template, so 256 are some 13 MB), and the source bytes those may add up to, since one version
    # may have 3 x 128 KB (compiled some 15 times larger: 4 MiB of source is some 60 MB at most).
    template_max_per_app: int = 1000
    template_max_versions: int = 100
    template_cache_size: int = 256
    template_cache_bytes: int = 4 * MIB
    # All the renders of one request (a batch of 500, or a hostile template each of whose renders stops at its
    # own time limit) end after this: a 422, so that no request holds a web thread for long. A 3 KB receipt
    # renders in 50 to 100 µs (2 cores, idle to busy), a 500-message batch of it in 25 to 50 ms.
    template_request_render_ms: int = 2000
    worker_concurrency: int = 8
    db_pool_size: int = 10
    db_timeout_s: float = 5.0
    db_connect_timeout_s: int = 5  # every connect to Postgres; whole seconds, at least 2 (libpq's rule)
    # Issue 19: the statement_timeout and idle_in_transaction_session_timeout of our own sessions (the pools of
    # the web, the worker and Procrastinate: db.session_options), so that none holds a snapshot open for long.
    db_statement_timeout_s: int = 60
    db_idle_in_transaction_timeout_s: int = 60
    # Where a claim starts reading each lane of the queue: this far below the run_at its process's claims got
    # to; from the very start every so often (store/jobs.py, ClaimFloors).
    send_claim_floor_margin_s: float = 2.0
    send_claim_full_scan_s: float = 10.0
    # While mail trickles in, one wake-up per worker process keeps claiming as its running sender (for up to
    # send_run_max_s; 0: every wake-up ends after its barrier's claim), no sooner than send_linger_ms after its
    # last claim began when that one came back short but not empty, so that its batches fill; a wake-up fetched
    # meanwhile waits up to send_handoff_wait_ms for it to claim instead (0: claims itself). services/send_runs.py
    send_run_max_s: float = 10.0
    send_linger_ms: int = 100
    send_handoff_wait_ms: int = 500
    # The read replica: the longest a listing waits for a replica connection before it reads the primary; the
    # most the replica may lag behind the primary and still serve; how often its lag is measured (per web
    # process); and, once it could not be reached, how long before it is tried again.
    replica_timeout_s: float = 1.0
    replica_max_lag_s: float = 30.0
    replica_check_interval_s: float = 1.0
    replica_retry_s: float = 5.0
    # Token buckets in Postgres (see services/rate_limits.py); a rate of 0 turns the limit off.
    rate_limit_per_s: float = 500.0
    rate_limit_burst: int = 1000
    # How long a web process may spend request tokens it took ahead (0: one statement per request).
    rate_limit_lease_ms: int = 100
    mailjet_max_calls_per_s: float = 100.0
    # Lookups by CustomID (before resending a job whose earlier outcome is unknown) one claim makes at once.
    mailjet_lookup_concurrency: int = 10
    # The dashboard (/dashboard): the operator's token sees every app; the key that signs its session
    # cookie (when unset, one made once and kept in the database, the same for every process).
    operator_token: str | None = dataclasses.field(default=None, repr=False)
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    # A dashboard session ends this long after its log-in, whatever it does meanwhile.
    dashboard_session_lifetime_s: float = 12 * 3600.0
    # The session cookie is sent over https only; `mailer dev` (plain http on loopback) turns it off.
    dashboard_cookie_secure: bool = True
    # Log-in attempts a minute (bursts of as many), per client address and in all; 0 turns a limit off.
    dashboard_logins_per_address_per_min: float = 10.0
    dashboard_logins_per_min: float = 60.0
    # The variables JSON a template's preview page takes (bytes of UTF-8): the form is a GET, so it also has
    # to fit gunicorn's request line (4094 bytes, URL-encoded); larger previews go through POST .../render.
    dashboard_preview_max_bytes: int = 4096
    # Reverse proxies in front of gunicorn that append the client's address to X-Forwarded-For: with N, the
    # client address (log-in throttling, logs) is the Nth address from the right of that header. 0: the
    # header is ignored and the address is the TCP peer's (behind a proxy, the proxy's).
    trusted_proxy_hops: int = 0
    # /metrics reads its database gauges at most once per this many seconds per process (0: every scrape).
    metrics_db_interval_s: float = 10.0
    # Retention (services/retention.py): bodies are purged this many days after a job ended, jobs (and
    # everything hanging off them) deleted after retention_days; each statement touches at most a batch.
    retention_body_days: int = 30
    retention_days: int = 365
    retention_batch: int = 1000
    # History tables are partitioned by month (migration 0027): housekeeping keeps this many months ahead.
    partitions_ahead_months: int = 3
    # How long dropping an expired partition may wait for its lock on the parent before trying next hour.
    partition_lock_timeout_ms: int = 1000
    # How long each migration of `mailer db migrate` may wait for a lock before it rolls back and is tried again.
    migration_lock_timeout_s: int = 5
    # Issue 21, stored templates (domain/templating.py, Limits.from_settings): the largest part (subject, html,
    # text) or variables schema a template version may have, above Gmail's 102 KB clipping of html; the time
    # one message's rendering may take on the request path; and the most one rendered message (subject + html +
    # text) may hold: ten times that clipping point, far above any real email.
    template_max_bytes: int = 128 * 1024
    template_render_timeout_ms: int = 200
    template_max_output_bytes: int = MIB
    # Issue 22, one-click unsubscribe: the base URL the world reaches web at (no trailing slash); None: bulk mail
    # goes without List-Unsubscribe headers. POST /unsubscribe/{token} a minute per client address and in all
    # (bursts of as many); 0 turns a limit off.
    public_url: str | None = None
    unsubscribes_per_address_per_min: float = 30.0
    unsubscribes_per_min: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: the process environment)."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        defaults = cls()
        return cls(
            database_url=reader.text("DATABASE_URL"),
            direct_database_url=reader.text("MAILER_DIRECT_DATABASE_URL"),
            database_replica_url=reader.text("DATABASE_REPLICA_URL"),
            mailjet_api_url=(reader.text("MAILJET_API_URL") or defaults.mailjet_api_url).rstrip("/"),
            mailjet_api_key=reader.text("MAILJET_API_KEY"),
            mailjet_api_secret=reader.text("MAILJET_API_SECRET"),
            mailjet_timeout_s=reader.number("MAILER_MAILJET_TIMEOUT_S", defaults.mailjet_timeout_s, positive=True),
            events_auth=reader.text("MAILER_EVENTS_AUTH"),
            webhook_allow_private=reader.flag("MAILER_WEBHOOK_ALLOW_PRIVATE"),
            port=reader.integer("PORT", defaults.port, minimum=1, maximum=65535),
            max_body_bytes=reader.integer("MAILER_MAX_BODY_BYTES", defaults.max_body_bytes, minimum=1),
            max_json_depth=reader.integer(
                "MAILER_MAX_JSON_DEPTH", defaults.max_json_depth, minimum=MIN_JSON_DEPTH, maximum=MAX_JSON_DEPTH
            ),
            events_chunk_size=reader.integer(
                "MAILER_EVENTS_CHUNK_SIZE", defaults.events_chunk_size, minimum=1, maximum=100_000
            ),
            schedule_max_past_days=reader.integer(
                "MAILER_SCHEDULE_MAX_PAST_DAYS", defaults.schedule_max_past_days, minimum=0, maximum=3660
            ),
            web_header_timeout_s=reader.number(
                "MAILER_WEB_HEADER_TIMEOUT_S", defaults.web_header_timeout_s, positive=True
            ),
            web_request_timeout_s=reader.number(
                "MAILER_WEB_REQUEST_TIMEOUT_S", defaults.web_request_timeout_s, positive=True
            ),
            web_send_timeout_s=reader.number("MAILER_WEB_SEND_TIMEOUT_S", defaults.web_send_timeout_s, positive=True),
            web_max_header_bytes=reader.integer(
                "MAILER_WEB_MAX_HEADER_BYTES", defaults.web_max_header_bytes, minimum=1024, maximum=1024 * 1024
            ),
            web_max_connections=reader.integer(
                "MAILER_WEB_MAX_CONNECTIONS", defaults.web_max_connections, minimum=1, maximum=100_000
            ),
            web_max_buffered_bytes=reader.integer(
                "MAILER_WEB_MAX_BUFFERED_BYTES", defaults.web_max_buffered_bytes, minimum=1, maximum=2**40
            ),
            send_max_attempts=reader.integer("MAILER_SEND_MAX_ATTEMPTS", defaults.send_max_attempts, minimum=1),
            send_backoff_base_s=reader.number("MAILER_SEND_BACKOFF_BASE_S", defaults.send_backoff_base_s),
            send_backoff_cap_s=reader.number("MAILER_SEND_BACKOFF_CAP_S", defaults.send_backoff_cap_s),
            send_batch_size=reader.integer("MAILER_SEND_BATCH_SIZE", defaults.send_batch_size, minimum=1, maximum=50),
            send_max_call_bytes=reader.integer(
                "MAILER_SEND_MAX_CALL_BYTES", defaults.send_max_call_bytes, minimum=1024, maximum=2**31 - 1
            ),
            send_stalled_after_s=reader.number("MAILER_SEND_STALLED_AFTER_S", defaults.send_stalled_after_s),
            send_call_window_s=reader.number(
                "MAILER_SEND_CALL_WINDOW_S", defaults.send_call_window_s, positive=True
            ),
            send_listing_delay_s=reader.number("MAILER_SEND_LISTING_DELAY_S", defaults.send_listing_delay_s),
            send_reconnect_grace_s=reader.number(
                "MAILER_SEND_RECONNECT_GRACE_S", defaults.send_reconnect_grace_s, positive=True
            ),
            send_lease_s=reader.number("MAILER_SEND_LEASE_S", defaults.send_lease_s, positive=True),
            webhook_retry_schedule=reader.schedule("MAILER_WEBHOOK_RETRY_SCHEDULE", defaults.webhook_retry_schedule),
            webhook_timeout_s=reader.number("MAILER_WEBHOOK_TIMEOUT_S", defaults.webhook_timeout_s, positive=True),
            webhook_concurrency=reader.integer("MAILER_WEBHOOK_CONCURRENCY", defaults.webhook_concurrency, minimum=1),
            webhook_app_concurrency=reader.integer(
                "MAILER_WEBHOOK_APP_CONCURRENCY", defaults.webhook_app_concurrency, minimum=0
            ),
            webhook_disable_after_s=reader.number("MAILER_WEBHOOK_DISABLE_AFTER_S", defaults.webhook_disable_after_s),
            webhook_max_endpoints=reader.integer(
                "MAILER_WEBHOOK_MAX_ENDPOINTS", defaults.webhook_max_endpoints, minimum=1, maximum=10_000
            ),
            webhook_host_rate_per_s=reader.number("MAILER_WEBHOOK_HOST_RATE_PER_S", defaults.webhook_host_rate_per_s),
            webhook_dns_timeout_s=reader.number(
                "MAILER_WEBHOOK_DNS_TIMEOUT_S", defaults.webhook_dns_timeout_s, positive=True
            ),
            webhook_dns_threads=reader.integer("MAILER_WEBHOOK_DNS_THREADS", defaults.webhook_dns_threads,
                                               minimum=1, maximum=64),
            webhook_expand_batch=reader.integer(
                "MAILER_WEBHOOK_EXPAND_BATCH", defaults.webhook_expand_batch, minimum=1, maximum=100_000
            ),
            template_max_per_app=reader.integer(
                "MAILER_TEMPLATE_MAX_PER_APP", defaults.template_max_per_app, minimum=1, maximum=1_000_000
            ),
            template_max_versions=reader.integer(
                "MAILER_TEMPLATE_MAX_VERSIONS", defaults.template_max_versions, minimum=1, maximum=10_000
            ),
            template_cache_size=reader.integer(
                "MAILER_TEMPLATE_CACHE_SIZE", defaults.template_cache_size, minimum=0, maximum=100_000
            ),
            template_cache_bytes=reader.integer(
                "MAILER_TEMPLATE_CACHE_BYTES", defaults.template_cache_bytes, minimum=0, maximum=1024 * MIB
            ),
            template_request_render_ms=reader.integer(
                "MAILER_TEMPLATE_REQUEST_RENDER_MS", defaults.template_request_render_ms, minimum=1, maximum=600_000
            ),
            webhook_replay_max_days=reader.integer(
                "MAILER_WEBHOOK_REPLAY_MAX_DAYS", defaults.webhook_replay_max_days, minimum=1, maximum=3660
            ),
            webhook_replay_in_flight=reader.integer(
                "MAILER_WEBHOOK_REPLAY_IN_FLIGHT", defaults.webhook_replay_in_flight, minimum=1, maximum=100_000
            ),
            webhook_secret_keys=tuple(
                key.strip() for key in (reader.text("MAILER_WEBHOOK_SECRET_KEYS") or "").split(",") if key.strip()
            ),
            worker_concurrency=reader.integer("MAILER_WORKER_CONCURRENCY", defaults.worker_concurrency, minimum=1),
            db_pool_size=reader.integer("MAILER_DB_POOL_SIZE", defaults.db_pool_size, minimum=1),
            db_timeout_s=reader.number("MAILER_DB_TIMEOUT_S", defaults.db_timeout_s, positive=True),
            db_connect_timeout_s=reader.integer(
                "MAILER_DB_CONNECT_TIMEOUT_S", defaults.db_connect_timeout_s, minimum=2, maximum=300
            ),
            db_statement_timeout_s=reader.integer(
                "MAILER_DB_STATEMENT_TIMEOUT_S", defaults.db_statement_timeout_s, minimum=1,
                maximum=MAX_SESSION_TIMEOUT_S,
            ),
            db_idle_in_transaction_timeout_s=reader.integer(
                "MAILER_DB_IDLE_IN_TRANSACTION_TIMEOUT_S", defaults.db_idle_in_transaction_timeout_s, minimum=1,
                maximum=MAX_SESSION_TIMEOUT_S,
            ),
            send_claim_floor_margin_s=reader.number(
                "MAILER_SEND_CLAIM_FLOOR_MARGIN_S", defaults.send_claim_floor_margin_s, positive=True
            ),
            send_claim_full_scan_s=reader.number(
                "MAILER_SEND_CLAIM_FULL_SCAN_S", defaults.send_claim_full_scan_s, positive=True
            ),
            send_run_max_s=reader.number("MAILER_SEND_RUN_MAX_S", defaults.send_run_max_s),
            send_linger_ms=reader.integer(
                "MAILER_SEND_LINGER_MS", defaults.send_linger_ms, minimum=0, maximum=MAX_SEND_LINGER_MS
            ),
            send_handoff_wait_ms=reader.integer(
                "MAILER_SEND_HANDOFF_WAIT_MS", defaults.send_handoff_wait_ms, minimum=0,
                maximum=MAX_SEND_HANDOFF_WAIT_MS,
            ),
            replica_timeout_s=reader.number("MAILER_REPLICA_TIMEOUT_S", defaults.replica_timeout_s, positive=True),
            replica_max_lag_s=reader.number("MAILER_REPLICA_MAX_LAG_S", defaults.replica_max_lag_s, positive=True),
            replica_check_interval_s=reader.number(
                "MAILER_REPLICA_CHECK_INTERVAL_S", defaults.replica_check_interval_s, positive=True
            ),
            replica_retry_s=reader.number("MAILER_REPLICA_RETRY_S", defaults.replica_retry_s, positive=True),
            rate_limit_per_s=reader.number("MAILER_RATE_LIMIT_PER_S", defaults.rate_limit_per_s),
            rate_limit_burst=reader.integer("MAILER_RATE_LIMIT_BURST", defaults.rate_limit_burst, minimum=1),
            rate_limit_lease_ms=reader.integer(
                "MAILER_RATE_LIMIT_LEASE_MS", defaults.rate_limit_lease_ms, minimum=0, maximum=1000
            ),
            mailjet_max_calls_per_s=reader.number("MAILER_MAILJET_MAX_CALLS_PER_S", defaults.mailjet_max_calls_per_s),
            mailjet_lookup_concurrency=reader.integer(
                "MAILER_MAILJET_LOOKUP_CONCURRENCY", defaults.mailjet_lookup_concurrency, minimum=1, maximum=50
            ),
            operator_token=reader.text("MAILER_OPERATOR_TOKEN"),
            secret_key=reader.text("MAILER_SECRET_KEY"),
            dashboard_session_lifetime_s=reader.number(
                "MAILER_DASHBOARD_SESSION_LIFETIME_S", defaults.dashboard_session_lifetime_s, positive=True
            ),
            dashboard_cookie_secure=reader.flag("MAILER_DASHBOARD_COOKIE_SECURE", default=True),
            dashboard_logins_per_address_per_min=reader.number(
                "MAILER_DASHBOARD_LOGINS_PER_ADDRESS_PER_MIN", defaults.dashboard_logins_per_address_per_min
            ),
            dashboard_logins_per_min=reader.number(
                "MAILER_DASHBOARD_LOGINS_PER_MIN", defaults.dashboard_logins_per_min
            ),
            dashboard_preview_max_bytes=reader.integer(
                "MAILER_DASHBOARD_PREVIEW_MAX_BYTES", defaults.dashboard_preview_max_bytes, minimum=2, maximum=MIB
            ),
            trusted_proxy_hops=reader.integer(
                "MAILER_TRUSTED_PROXY_HOPS", defaults.trusted_proxy_hops, minimum=0, maximum=MAX_PROXY_HOPS
            ),
            public_url=_public_url(reader.text("MAILER_PUBLIC_URL")),
            unsubscribes_per_address_per_min=reader.number(
                "MAILER_UNSUBSCRIBES_PER_ADDRESS_PER_MIN", defaults.unsubscribes_per_address_per_min
            ),
            unsubscribes_per_min=reader.number("MAILER_UNSUBSCRIBES_PER_MIN", defaults.unsubscribes_per_min),
            metrics_db_interval_s=reader.number("MAILER_METRICS_DB_INTERVAL_S", defaults.metrics_db_interval_s),
            retention_body_days=reader.integer("MAILER_RETENTION_BODY_DAYS", defaults.retention_body_days, minimum=1),
            retention_days=reader.integer("MAILER_RETENTION_DAYS", defaults.retention_days, minimum=1),
            retention_batch=reader.integer(
                "MAILER_RETENTION_BATCH", defaults.retention_batch, minimum=1, maximum=100_000
            ),
            partitions_ahead_months=reader.integer(
                "MAILER_PARTITIONS_AHEAD_MONTHS", defaults.partitions_ahead_months, minimum=1, maximum=24
            ),
            partition_lock_timeout_ms=reader.integer(
                "MAILER_PARTITION_LOCK_TIMEOUT_MS", defaults.partition_lock_timeout_ms, minimum=10, maximum=60_000
            ),
            migration_lock_timeout_s=reader.integer(
                "MAILER_MIGRATION_LOCK_TIMEOUT_S", defaults.migration_lock_timeout_s, minimum=1, maximum=600
            ),
            template_max_bytes=reader.integer(
                "MAILER_TEMPLATE_MAX_BYTES", defaults.template_max_bytes, minimum=1024, maximum=MAX_TEMPLATE_BYTES
            ),
            template_render_timeout_ms=reader.integer(
                "MAILER_TEMPLATE_RENDER_TIMEOUT_MS", defaults.template_render_timeout_ms, minimum=1,
                maximum=MAX_TEMPLATE_RENDER_TIMEOUT_MS,
            ),
            template_max_output_bytes=reader.integer(
                "MAILER_TEMPLATE_MAX_OUTPUT_BYTES", defaults.template_max_output_bytes, minimum=1024,
                maximum=MAX_TEMPLATE_OUTPUT_BYTES,
            ),
        )

    def __post_init__(self) -> None:
        if self.send_stalled_after_s <= self.mailjet_timeout_s:
            raise ConfigError(
                f"MAILER_SEND_STALLED_AFTER_S ({self.send_stalled_after_s}) must exceed "
                f"MAILER_MAILJET_TIMEOUT_S ({self.mailjet_timeout_s})"
            )
        if self.send_lease_s <= self.send_reconnect_grace_s:
            raise ConfigError(
                f"MAILER_SEND_LEASE_S ({self.send_lease_s}) must exceed "
                f"MAILER_SEND_RECONNECT_GRACE_S ({self.send_reconnect_grace_s})"
            )
        if self.send_listing_delay_s > MAX_LISTING_DELAY_S:  # a job waits this long before its resend
            raise ConfigError(
                f"MAILER_SEND_LISTING_DELAY_S ({self.send_listing_delay_s}) must not exceed {MAX_LISTING_DELAY_S:g}"
            )
        if self.send_lease_s <= self.send_claim_bound_s:
            raise ConfigError(
                f"MAILER_SEND_LEASE_S ({self.send_lease_s}) must exceed a claim's longest life: "
                f"MAILER_SEND_CALL_WINDOW_S ({self.send_call_window_s}) + MAILER_MAILJET_TIMEOUT_S "
                f"({self.mailjet_timeout_s}) + MAILER_DB_TIMEOUT_S ({self.db_timeout_s}) + {CLAIM_MARGIN_S:g} s, "
                "or a slow but live claim could be taken over"
            )
        if self.send_reconnect_grace_s < 4 * SENDER_HEARTBEAT_S:
            raise ConfigError(
                f"MAILER_SEND_RECONNECT_GRACE_S ({self.send_reconnect_grace_s}) must be at least "
                f"{4 * SENDER_HEARTBEAT_S} (four heartbeats): shorter, the send gate closes between two heartbeats "
                "and claims release their jobs untried"
            )
        if self.send_claim_floor_margin_s > MAX_CLAIM_FLOOR_MARGIN_S:
            raise ConfigError(
                f"MAILER_SEND_CLAIM_FLOOR_MARGIN_S ({self.send_claim_floor_margin_s}) must not exceed "
                f"{MAX_CLAIM_FLOOR_MARGIN_S:g}"
            )
        if not MIN_CLAIM_FULL_SCAN_S <= self.send_claim_full_scan_s <= MAX_CLAIM_FULL_SCAN_S:
            raise ConfigError(
                f"MAILER_SEND_CLAIM_FULL_SCAN_S ({self.send_claim_full_scan_s}) must be between "
                f"{MIN_CLAIM_FULL_SCAN_S:g} and {MAX_CLAIM_FULL_SCAN_S:g}"
            )
        if self.send_run_max_s > MAX_SEND_RUN_S:
            raise ConfigError(f"MAILER_SEND_RUN_MAX_S ({self.send_run_max_s}) must not exceed {MAX_SEND_RUN_S:g}")
        if 0 < self.send_handoff_wait_ms <= self.send_linger_ms:  # it would give up before the claim it waits for
            raise ConfigError(
                f"MAILER_SEND_HANDOFF_WAIT_MS ({self.send_handoff_wait_ms}) must be 0 or exceed "
                f"MAILER_SEND_LINGER_MS ({self.send_linger_ms})"
            )
        if self.retention_body_days > self.retention_days:
            raise ConfigError(
                f"MAILER_RETENTION_BODY_DAYS ({self.retention_body_days}) must not exceed "
                f"MAILER_RETENTION_DAYS ({self.retention_days}): a body cannot outlive its job"
            )
        for number, key in enumerate(self.webhook_secret_keys, start=1):
            if not _is_fernet_key(key):  # never quote the key itself
                raise ConfigError(
                    f"MAILER_WEBHOOK_SECRET_KEYS: key {number} is not a Fernet key (url-safe base64 of 32 bytes; "
                    "make one with `mailer webhooks new-key`)"
                )
        if self.replica_check_interval_s >= self.replica_max_lag_s:  # a lag is only seen one interval late
            raise ConfigError(
                f"MAILER_REPLICA_CHECK_INTERVAL_S ({self.replica_check_interval_s}) must be less than "
                f"MAILER_REPLICA_MAX_LAG_S ({self.replica_max_lag_s})"
            )
        if self.operator_token is not None and len(self.operator_token) < MIN_OPERATOR_TOKEN:
            raise ConfigError(f"MAILER_OPERATOR_TOKEN must be at least {MIN_OPERATOR_TOKEN} characters")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{field.name}={_masked(field.name, getattr(self, field.name))!r}" for field in dataclasses.fields(self)
        )
        return f"Settings({shown})"

    __str__ = __repr__

    @property
    def send_claim_bound_s(self) -> float:
        """The longest a live claim takes: past it, its sender stops renewing its lease (services/liveness.py)."""
        # The results' recording is retried for up to MAILER_DB_TIMEOUT_S (services/send_recording.py).
        return self.send_call_window_s + self.mailjet_timeout_s + self.db_timeout_s + CLAIM_MARGIN_S

    def require_database_url(self) -> str:
        """The database URL, or a clear error when it is not configured."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set")
        return self.database_url

    def require_direct_database_url(self) -> str:
        """The direct (not pooled) URL: MAILER_DIRECT_DATABASE_URL, else DATABASE_URL."""
        return self.direct_database_url or self.require_database_url()

    @property
    def database_pooled(self) -> bool:
        """Whether DATABASE_URL goes through a transaction pooler: no session state may be kept on it."""
        return self.direct_database_url is not None and self.direct_database_url != self.database_url


def _public_url(value: str | None) -> str | None:
    """MAILER_PUBLIC_URL without its trailing slash; an absolute http(s) URL with no query or fragment."""
    if value is None:
        return None
    parts = urllib.parse.urlsplit(value)
    bad = parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc
    if bad or parts.query or parts.fragment or len(value) > 200:
        raise ConfigError(
            "MAILER_PUBLIC_URL must be an http(s) URL without credentials, query or fragment, of at most 200 characters"
        )
    return value.rstrip("/")


def _is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32 and len(key) == 44
    except (ValueError, UnicodeEncodeError):
        return False


def _masked(name: str, value: object) -> object:
    """A setting as repr may show it: credentials as '***', URLs without their password."""
    if value is None or value == () or isinstance(value, bool | int | float):
        return value
    if isinstance(value, tuple) and not any(word in name for word in _SECRET_WORDS):
        return value
    if name.endswith("_url") and isinstance(value, str):
        return _url_without_password(value)
    if any(word in name for word in _SECRET_WORDS):
        return "***"
    return value


def _url_without_password(url: str) -> str:
    """A libpq or HTTP URL with any password replaced by '***' (in the authority or a query parameter)."""
    if "://" not in url:  # libpq's keyword form: host=db password=...
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if has_password else netloc
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else f"{key}={value}"
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclasses.dataclass(frozen=True)
class _Reader:
    env: Mapping[str, str]

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def flag(self, name: str, default: bool = False) -> bool:
        value = (self.text(name) or ("1" if default else "0")).lower()
        if value not in {"0", "1", "true", "false", "yes", "no"}:
            raise ConfigError(f"{name} must be 0 or 1, not {value!r}")
        return value in {"1", "true", "yes"}

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        raw = self.text(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ConfigError(f"{name} must be between {minimum} and {maximum}, not {value}")
        return value

    def number(self, name: str, default: float, positive: bool = False) -> float:
        raw = self.text(name)
        try:
            value = default if raw is None else float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ConfigError(f"{name} must be a finite {'positive' if positive else 'non-negative'} number, not {raw}")
        return value

    def schedule(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            steps = tuple(int(part) for part in raw.split(","))
        except ValueError:
            raise ConfigError(f"{name} must be comma-separated seconds, not {raw!r}") from None
        if not steps or any(step < 0 for step in steps):
            raise ConfigError(f"{name} must list at least one non-negative number of seconds")
        return steps
