"""The Procrastinate app: the queue that wakes the workers. Tasks live in mailer.tasks; wake-ups are
deferred from SQL (mailer_wake_senders, sql/migrations/0009) with the names below."""

from __future__ import annotations

import procrastinate

SEND_TASK = "mailer.send_due_jobs"
SEND_QUEUE = "send"
# Procrastinate runs higher priorities first: transactional wake-ups jump any bulk backlog.
LANE_PRIORITY = {"transactional": 10, "bulk": 0}

# The worker's app; mailer.worker gives it a fresh connector (and pool) on every (re)start.
app = procrastinate.App(connector=procrastinate.PsycopgConnector(), import_paths=["mailer.tasks"])
