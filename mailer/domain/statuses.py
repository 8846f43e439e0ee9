"""Job and recipient statuses, and the rule that a recipient's status never moves backwards."""

from __future__ import annotations

SCHEDULED = "scheduled"
QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"
CANCELLED = "cancelled"

JOB_STATUSES = (SCHEDULED, QUEUED, SENDING, SENT, FAILED, SUPPRESSED, CANCELLED)
FINAL_JOB_STATUSES = frozenset({SENT, FAILED, SUPPRESSED, CANCELLED})
CANCELLABLE_JOB_STATUSES = frozenset({SCHEDULED, QUEUED})

PRIORITIES = ("transactional", "bulk")

# Rank of each recipient status (mirrored in the recipient_statuses table, which SQL uses to
# enforce the same rule). A status only ever changes to one of higher rank, so events applied
# in any order end at the same place: an `open` that arrives before `sent` still ends `opened`.
RECIPIENT_STATUS_RANK = {
    "pending": 0,
    "sent": 10,
    "deferred": 20,
    "delivered": 30,
    "bounced": 40,
    "blocked": 40,
    "opened": 50,
    "clicked": 60,
    "unsubscribed": 70,
    "spam": 80,
    "failed": 90,
    "suppressed": 90,
}


def advances(current: str, candidate: str) -> bool:
    """Whether a recipient in `current` status may move to `candidate`."""
    return RECIPIENT_STATUS_RANK[candidate] > RECIPIENT_STATUS_RANK[current]
