"""The worker process: a Procrastinate worker for mailer's tasks that outlives database outages."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator

import procrastinate
import psycopg
import psycopg_pool

from mailer import db, jobqueue, memory
from mailer.config import Settings
from mailer.mailjet import send as mailjet
from mailer.services import liveness, send_runs, unsubscribe, webhook_delivery, webhook_secrets

log = logging.getLogger(__name__)

RESTART_DELAY_S = (0.5, 1, 2, 5)
HEALTHY_RUN_S = 30.0  # a run that lasted this long did not crash at start: the restart delays begin again
PROBE_INTERVAL_S = 0.5  # while Postgres is unreachable, how often a worker tries to connect
# How a run ends when Postgres goes away (Procrastinate wraps psycopg's errors in ConnectorException).
DATABASE_ERRORS = (procrastinate.exceptions.ConnectorException, psycopg.OperationalError)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What tasks need: settings, a database pool, the Mailjet client, the webhook posting threads."""

    settings: Settings
    pool: psycopg_pool.ConnectionPool
    mailjet: mailjet.MailjetClient
    webhooks: webhook_delivery.Dispatcher


def run(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT; restart it whenever it stops for any other reason."""
    webhook_secrets.warn_if_keyed_by_the_database(settings)
    unsubscribe.warn_if_no_public_url(settings)
    memory.pin_mmap_threshold()  # so that the memory of big messages goes back once they are sent
    pool = db.create_pool(settings, name="worker", max_size=settings.worker_concurrency + 2)
    runtime = Runtime(
        settings=settings,
        pool=pool,
        mailjet=mailjet.MailjetClient(
            settings.mailjet_api_url, settings.mailjet_api_key, settings.mailjet_api_secret,
            timeout=settings.mailjet_timeout_s,
        ),
        # Kept across the worker's in-process restarts, like the pool.
        webhooks=webhook_delivery.Dispatcher(pool, settings),
    )
    try:
        # This process's sender identity (its claims live as long as it does) and the takeover check of others'.
        with liveness.running(settings, pool):
            asyncio.run(_supervise(runtime))
    finally:
        runtime.webhooks.close()  # webhook posts in flight get recorded before the pool closes
        runtime.pool.close()


async def _supervise(runtime: Runtime) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Procrastinate runs sync tasks in the loop's default executor, whose threads asyncio caps at cpu count + 4
    # (6 on a 2-core machine): MAILER_WORKER_CONCURRENCY sends at once need as many threads (and a few spare).
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
        max_workers=runtime.settings.worker_concurrency + 4, thread_name_prefix="mailer-task"
    ))
    current: asyncio.Task[None] | None = None

    def stop() -> None:
        stopping.set()
        send_runs.wind_down()  # a running sender would otherwise keep claiming while mail comes
        if current is not None:
            current.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    failures = 0
    while not stopping.is_set():
        started = loop.time()
        current = asyncio.create_task(_run_when_reachable(runtime))
        try:
            await current
            failures = 0
            if not stopping.is_set():
                log.warning("procrastinate worker stopped by itself; restarting it")
        except asyncio.CancelledError:
            if stopping.is_set():
                break
            raise
        except Exception as exc:
            # Neither a run that lost its database (the next one waits for it in _await_database) nor one
            # that went well for a while is part of a crash loop: for them the delays begin again.
            lost_database = isinstance(exc, DATABASE_ERRORS)
            failures = 0 if lost_database or loop.time() - started > HEALTHY_RUN_S else failures + 1
            log.warning("worker stopped (%s: %s); restarting", type(exc).__name__, str(exc).strip())
        delay = RESTART_DELAY_S[min(failures, len(RESTART_DELAY_S) - 1)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)


async def _run_when_reachable(runtime: Runtime) -> None:
    await _await_database(runtime.settings)
    # The tasks' pool outlives runs: what it kept idle through an outage is dead, and each dead connection a
    # task checks out costs it psycopg_pool's 1 s pause before the next (past MAILER_DB_TIMEOUT_S if shorter).
    db.retire(runtime.pool)
    await _run_once(runtime)


async def _await_database(settings: Settings) -> None:
    """Return once a connect to Postgres succeeds (to both URLs, behind PgBouncer: the run LISTENs on the direct
    one): tried every PROBE_INTERVAL_S, each bounded by its timeout.

    Without it a run started during an outage waits in its pool's reconnection backoff, which grows to
    many seconds and outlasts the outage.
    """
    since = None
    loop = asyncio.get_running_loop()
    while True:
        try:
            conn = await db.connect_async(settings.require_database_url(), settings, autocommit=True)
            await conn.close()
            if settings.database_pooled:
                conn = await db.connect_direct_async(settings, autocommit=True)
                await conn.close()
        except psycopg.OperationalError as exc:
            if since is None:
                since = loop.time()
                log.warning("database unreachable (%s); trying again every %s s", str(exc).strip(), PROBE_INTERVAL_S)
            await asyncio.sleep(PROBE_INTERVAL_S)
            continue
        if since is not None:
            log.info("database reachable again after %.1f s", loop.time() - since)
        return


async def _run_once(runtime: Runtime) -> None:
    # A fresh pool per run: after an outage nothing stale is reused. Its connects and LISTEN's are bounded
    # by MAILER_DB_CONNECT_TIMEOUT_S; a run whose database goes away ends, and _supervise starts another.
    settings = runtime.settings
    pool = db.create_async_pool(settings, name="procrastinate", min_size=2, max_size=4)
    try:
        await pool.open(wait=True, timeout=settings.db_connect_timeout_s + settings.db_timeout_s)
        with jobqueue.app.replace_connector(Connector(settings)) as app:
            async with app.open_async(pool=pool):
                await app.run_worker_async(
                    concurrency=settings.worker_concurrency,
                    additional_context={"runtime": runtime},
                    # LISTEN/NOTIFY wakes us at once; polling is the fallback for scheduled jobs
                    # (send_at, retry backoff) and for a lost LISTEN connection.
                    fetch_job_polling_interval=1.0,
                    install_signal_handlers=False,
                    # Wake-ups and periodic ticks leave no history worth keeping; failed ones stay for a look.
                    delete_jobs=procrastinate.jobs.DeleteJobCondition.SUCCESSFUL,
                )
    finally:
        await pool.close()


class Connector(procrastinate.PsycopgConnector):
    """Procrastinate's connector with its LISTEN connection on MAILER_DIRECT_DATABASE_URL (else DATABASE_URL).

    Behind PgBouncer in transaction mode a LISTEN registers on whichever server connection ran it, which then
    serves other clients: the notifications never reach us. Procrastinate (pinned, 3.10.0) opens that one
    connection in _get_standalone_connection, from its pool's URL; its queries keep to the pool.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings

    @contextlib.asynccontextmanager
    async def _get_standalone_connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with await db.connect_direct_async(self._settings, autocommit=True) as connection:
            yield connection
