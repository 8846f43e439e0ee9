"""The Procrastinate app: the queue that wakes the workers. Tasks live in mailer.tasks."""

from __future__ import annotations

import procrastinate

SEND_TASK = "mailer.send_due_jobs"
SEND_QUEUE = "send"
# Procrastinate runs higher priorities first: transactional wake-ups jump any bulk backlog.
LANE_PRIORITY = {"transactional": 10, "bulk": 0}

# The connector gets its pool from the worker (App.open_async(pool)); the web process only
# defers on its own connection (configure(connection=...)), so it never opens this app.
app = procrastinate.App(connector=procrastinate.PsycopgConnector(), import_paths=["mailer.tasks"])
