"""Procrastinate tasks: thin wrappers over services."""

from __future__ import annotations

import datetime

import procrastinate

from mailer import db, jobqueue
from mailer.services import partitions, recovery, retention, scheduling, send_runs

# One wake-up sends at most this many full batches, so no single job holds a worker for long.
MAX_BATCHES_PER_JOB = 20
# One retention run stops after this long (each batch commits on its own; the next run continues).
RETENTION_BUDGET_S = 60.0


@jobqueue.app.task(name=jobqueue.SEND_TASK, queue=jobqueue.SEND_QUEUE, pass_context=True)
def send_due_jobs(context: procrastinate.JobContext) -> None:
    """Send due email, a batch of up to 50 per Mailjet call, until none is left or the cap is hit (or hand the
    last claim to the process's running sender: services/send_runs.py)."""
    runtime = context.additional_context["runtime"]
    send_runs.send_for_wakeup(runtime.pool, runtime.mailjet, runtime.settings,
                              lane=context.job.priority, max_full_batches=MAX_BATCHES_PER_JOB)


@jobqueue.app.periodic(cron="* * * * * */5", periodic_id="recover")
@jobqueue.app.task(name="mailer.recover_stalled_sends", queue="housekeeping", pass_context=True)
def recover_stalled_sends(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every 5 s: requeue legacy claims (made before sender liveness) a dead worker held, wake senders for due
    jobs nothing will pick up (claims with a sender: services/liveness.py runs the takeover every 2 s)."""
    runtime = context.additional_context["runtime"]
    with db.connection(runtime.pool) as conn:
        recovery.sweep(conn, runtime.settings)


@jobqueue.app.periodic(cron="* * * * * */5", periodic_id="scheduler")
@jobqueue.app.task(name="mailer.run_scheduler", queue="housekeeping", pass_context=True)
def run_scheduler(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every 5 s: turn schedule occurrences due within the next minute into scheduled jobs."""
    runtime = context.additional_context["runtime"]
    with db.connection(runtime.pool) as conn:
        scheduling.tick(conn, now=datetime.datetime.now(datetime.UTC), batch_size=runtime.settings.send_batch_size)


@jobqueue.app.periodic(cron="*/10 * * * *", periodic_id="retention")
@jobqueue.app.task(
    name="mailer.apply_retention", queue="housekeeping", queueing_lock="mailer.apply_retention", pass_context=True
)
def apply_retention(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every 10 minutes: purge old bodies, delete jobs past the horizon and finished queue jobs, in batches."""
    runtime = context.additional_context["runtime"]
    with db.connection(runtime.pool) as conn:
        retention.run(conn, retention.Policy.from_settings(runtime.settings), budget_s=RETENTION_BUDGET_S)


@jobqueue.app.periodic(cron="7 * * * *", periodic_id="partitions")
@jobqueue.app.task(
    name="mailer.maintain_partitions", queue="housekeeping", queueing_lock="mailer.maintain_partitions",
    pass_context=True,
)
def maintain_partitions(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every hour: create the months ahead of history tables, drop whole months past retention."""
    runtime = context.additional_context["runtime"]
    with db.connection(runtime.pool) as conn:
        partitions.maintain(conn, runtime.settings, now=datetime.datetime.now(datetime.UTC))


@jobqueue.app.periodic(cron="* * * * * *", periodic_id="webhooks")
@jobqueue.app.task(
    name="mailer.deliver_webhooks", queue="webhooks", queueing_lock="mailer.deliver_webhooks", pass_context=True
)
def deliver_webhooks(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every second: hand due webhook deliveries to this process's posting threads and return at once
    (the threads refill themselves as posts end, so a slow subscriber never holds a worker slot)."""
    context.additional_context["runtime"].webhooks.dispatch()
