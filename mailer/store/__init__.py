"""The store: one function per named query in sql/queries; the only code that runs SQL."""

from __future__ import annotations

from mailer.store.apps import get_app_by_key_id, insert_app, list_apps, revoke_app, rotate_app_key
from mailer.store.events import (
    advance_recipient_statuses,
    apply_pending_events,
    insert_mailjet_events,
    list_recipient_events,
)
from mailer.store.jobs import (
    claim_due_jobs,
    get_idempotency_key,
    get_job,
    insert_idempotency_key,
    insert_jobs,
    list_job_events,
    list_recipients,
    lock_idempotency_key,
    mark_jobs_failed,
    mark_jobs_sent,
    requeue_jobs,
    set_recipient_message_ids,
)

__all__ = [
    "advance_recipient_statuses",
    "apply_pending_events",
    "claim_due_jobs",
    "get_app_by_key_id",
    "get_idempotency_key",
    "get_job",
    "insert_app",
    "insert_idempotency_key",
    "insert_jobs",
    "insert_mailjet_events",
    "list_apps",
    "list_job_events",
    "list_recipient_events",
    "list_recipients",
    "lock_idempotency_key",
    "mark_jobs_failed",
    "mark_jobs_sent",
    "requeue_jobs",
    "revoke_app",
    "rotate_app_key",
    "set_recipient_message_ids",
]
