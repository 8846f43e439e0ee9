"""Outbound webhooks: what an endpoint can subscribe to, and the states of a delivery."""

from __future__ import annotations

import urllib.parse

# The names an endpoint can subscribe to: every recipient status a webhook reports (a recipient
# going back to `pending`, when a failed job is retried, is not reported), or '*' for all of them.
EVENT_NAMES = (
    "sent", "delivered", "opened", "clicked", "deferred", "bounced", "blocked", "spam", "unsubscribed",
    "failed", "suppressed",
)
ALL_EVENTS = "*"
MAX_EVENTS = len(EVENT_NAMES) + 1
DELIVERY_STATUSES = ("pending", "succeeded", "failed", "disabled")


def comparable_url(url: str) -> str:
    """The form in which two subscriber URLs are the same endpoint (scheme and host lower-case, no default
    port, "/" for an empty path, no empty query or fragment); the URL itself when it does not parse."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if ":" in host:
        host = f"[{host}]"  # IPv6
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + host
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        netloc += f":{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path or "/", parts.query, parts.fragment))
