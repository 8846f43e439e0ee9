"""The naive design, as the baseline: one Procrastinate job per email and one Mailjet call per email.

Not mailer's code: its own table, its own Procrastinate task (queue `naive`), the same Mailjet client
and the same simulator. A job loads its row, sends that one message, and records the result.

    python -m bench.naive --concurrency 8      # one worker process (the benchmark starts several)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import Sequence
from typing import Any

import procrastinate
import psycopg
import psycopg_pool

from mailer.mailjet import send as mailjet

TASK = "bench.naive_send"
QUEUE = "naive"
TABLE = """
CREATE TABLE IF NOT EXISTS naive_emails (
    id uuid PRIMARY KEY, message jsonb NOT NULL, status text NOT NULL DEFAULT 'queued',
    message_id bigint, error text, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

app = procrastinate.App(connector=procrastinate.PsycopgConnector())
# Defers inside the caller's transaction, as mailer's queueing does (the row and its job commit together).
deferrer = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())


@dataclasses.dataclass(frozen=True)
class Runtime:
    pool: psycopg_pool.ConnectionPool
    client: mailjet.MailjetClient


@app.task(name=TASK, queue=QUEUE, pass_context=True)
def send_one(context: procrastinate.JobContext, email_id: str) -> None:
    """Load one email, make one Mailjet call for it, record the outcome."""
    runtime: Runtime = context.additional_context["runtime"]
    with runtime.pool.connection() as conn:
        row = conn.execute("SELECT message FROM naive_emails WHERE id = %s", (email_id,)).fetchone()
    if row is None:
        return
    result = runtime.client.send([mailjet.OutgoingMessage(custom_id=email_id, message=row[0])]).results[0]
    with runtime.pool.connection() as conn:
        if result.accepted:
            conn.execute("UPDATE naive_emails SET status = 'sent', message_id = %s, updated_at = now() WHERE id = %s",
                         (result.recipients[0].message_id, email_id))
        else:
            conn.execute("UPDATE naive_emails SET status = 'failed', error = %s, updated_at = now() WHERE id = %s",
                         (result.error_message, email_id))


def prepare(url: str) -> None:
    """Create (or empty) the naive design's table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLE)
        conn.execute("TRUNCATE naive_emails")


def queue(conn: psycopg.Connection, messages: Sequence[dict[str, Any]]) -> None:
    """Insert emails and defer one job for each, in one transaction."""
    ids = [uuid.uuid4() for _ in messages]
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO naive_emails (id, message) VALUES (%s, %s)",
                            [(i, json.dumps(m)) for i, m in zip(ids, messages, strict=True)])
        deferrer.configure_task(TASK, connection=conn, queue=QUEUE).batch_defer(
            *({"email_id": str(i)} for i in ids)
        )


async def _work(concurrency: int) -> None:
    url = os.environ["DATABASE_URL"]
    runtime = Runtime(
        pool=psycopg_pool.ConnectionPool(url, min_size=1, max_size=concurrency + 2, open=True),
        client=mailjet.MailjetClient(os.environ["MAILJET_API_URL"], os.environ["MAILJET_API_KEY"],
                                     os.environ["MAILJET_API_SECRET"], timeout=30),
    )
    connector = procrastinate.PsycopgConnector(conninfo=url, min_size=2, max_size=4)  # as mailer's worker
    try:
        with app.replace_connector(connector) as worker_app:
            async with worker_app.open_async():
                await worker_app.run_worker_async(queues=[QUEUE], concurrency=concurrency,
                                                  additional_context={"runtime": runtime},
                                                  fetch_job_polling_interval=1.0)
    finally:
        runtime.pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_work(args.concurrency))


if __name__ == "__main__":
    main()
