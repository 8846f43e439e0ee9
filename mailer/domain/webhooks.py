"""Outbound webhooks: what an endpoint can subscribe to, and the states of a delivery."""

from __future__ import annotations

# The names an endpoint can subscribe to: every recipient status a webhook reports (a recipient
# going back to `pending`, when a failed job is retried, is not reported), or '*' for all of them.
EVENT_NAMES = (
    "sent", "delivered", "opened", "clicked", "deferred", "bounced", "blocked", "spam", "unsubscribed",
    "failed", "suppressed",
)
ALL_EVENTS = "*"
MAX_EVENTS = len(EVENT_NAMES) + 1
DELIVERY_STATUSES = ("pending", "succeeded", "failed", "disabled")
