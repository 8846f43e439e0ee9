"""The store: one function per named query in sql/queries; the only code that runs SQL."""

from __future__ import annotations

from mailer.store.apps import get_app_by_key_id, insert_app, list_apps, revoke_app, rotate_app_key
from mailer.store.events import (
    advance_recipient_statuses,
    apply_pending_events,
    list_recipient_events,
    record_mailjet_events,
)
from mailer.store.jobs import (
    cancel_revoked_jobs,
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
    recheck_jobs,
    release_jobs,
    requeue_jobs,
    set_recipient_message_ids,
)
from mailer.store.logs import (
    LogFilters,
    force_custom_plans,
    get_today_counts,
    list_daily_counts,
    list_logs,
    list_recipients_of_jobs,
)
from mailer.store.rate_limits import (
    delete_idle_rate_limit_buckets,
    peek_rate_limit_tokens,
    take_rate_limit_tokens,
)
from mailer.store.suppressions import (
    delete_suppression,
    get_suppression,
    insert_suppression,
    list_suppressed_recipients,
    list_suppressions,
    mark_jobs_suppressed,
    suppress_from_events,
    suppress_recipients,
)
from mailer.store.wakeups import await_wakers, wake_senders

__all__ = [
    "LogFilters",
    "advance_recipient_statuses",
    "apply_pending_events",
    "await_wakers",
    "cancel_revoked_jobs",
    "claim_due_jobs",
    "delete_idle_rate_limit_buckets",
    "delete_suppression",
    "force_custom_plans",
    "get_app_by_key_id",
    "get_idempotency_key",
    "get_job",
    "get_suppression",
    "get_today_counts",
    "insert_app",
    "insert_idempotency_key",
    "insert_jobs",
    "insert_suppression",
    "list_apps",
    "list_daily_counts",
    "list_job_events",
    "list_logs",
    "list_recipient_events",
    "list_recipients",
    "list_recipients_of_jobs",
    "list_suppressed_recipients",
    "list_suppressions",
    "lock_idempotency_key",
    "mark_jobs_failed",
    "mark_jobs_sent",
    "mark_jobs_suppressed",
    "peek_rate_limit_tokens",
    "recheck_jobs",
    "record_mailjet_events",
    "release_jobs",
    "requeue_jobs",
    "revoke_app",
    "rotate_app_key",
    "set_recipient_message_ids",
    "suppress_from_events",
    "suppress_recipients",
    "take_rate_limit_tokens",
    "wake_senders",
]
