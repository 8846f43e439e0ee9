"""Wake the senders: one Procrastinate job per batch of due email, deferred in the caller's transaction."""

from __future__ import annotations

import collections
import datetime as dt
import math
from collections.abc import Iterable

import psycopg

from mailer import jobqueue


def wake_senders(conn: psycopg.Connection, due: Iterable[tuple[str, dt.datetime | None]], batch_size: int) -> None:
    """Defer enough send jobs for `due` (priority, run_at or None for now) in the open transaction.

    Because the wake-up commits with the rows it wakes for, no committed email is ever left
    without a job that will look for it; a job that finds nothing left is a cheap no-op.
    """
    groups = collections.Counter(due)
    for (priority, run_at), count in groups.items():
        deferrer = jobqueue.deferrer.configure_task(
            jobqueue.SEND_TASK,
            connection=conn,
            queue=jobqueue.SEND_QUEUE,
            priority=jobqueue.LANE_PRIORITY[priority],
            schedule_at=run_at,
        )
        deferrer.batch_defer(*({} for _ in range(math.ceil(count / batch_size))))
