"""Rules every message must follow before it is accepted."""

from __future__ import annotations

import datetime as dt
import re

MAX_RECIPIENTS = 50
MAX_BATCH = 500
MAX_ATTACHMENTS_BYTES = 15 * 1024 * 1024  # Mailjet: 15 MB of attachments per message
MAX_METADATA_BYTES = 4096

# Headers Mailjet sets itself and refuses to take from us (error send-0011), plus those we set
# from dedicated fields. https://dev.mailjet.com/email/guides/send-api-v31/#add-email-headers
FORBIDDEN_HEADERS = frozenset(
    name.lower()
    for name in (
        "From", "Sender", "Subject", "To", "Cc", "Bcc", "Reply-To", "Return-Path", "Delivered-To",
        "Message-Id", "Date", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
        "DKIM-Signature", "DomainKey-Status", "Received-SPF", "Authentication-Results", "Received",
        "User-Agent", "X-Mailer", "X-Mailjet-Prio", "X-Mailjet-Debug", "X-Mailjet-Campaign",
        "X-Mailjet-DeduplicateCampaign", "X-Mailjet-TrackOpen", "X-Mailjet-TrackClick",
        "X-MJ-CustomID", "X-MJ-EventPayload", "X-MJ-Vars", "X-MJ-TemplateErrorDeliver",
        "X-MJ-TemplateErrorReporting", "X-MJ-TemplateLanguage", "X-MJ-WorkflowID",
    )
)

# Every X-MJ-* header steers Mailjet (monitoring category, event payload, custom id, template...), and
# Mailjet adds new ones: none may come from a client, not only those listed above.
MAILJET_CONTROL_PREFIX = "x-mj-"

# RFC 5322 field name: printable US-ASCII except the colon. \Z, not $: $ also matches before a
# trailing newline, which would let "X-Name\n" through.
HEADER_NAME = re.compile(r"\A[!-9;-~]{1,100}\Z")

# send_at must survive conversion to UTC and back into any session time zone (Python's
# datetime stops at years 1 and 9999), hence a day of slack at both ends.
EARLIEST_SEND_AT = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
LATEST_SEND_AT = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


def has_line_break(value: str) -> bool:
    """CR or LF would let a value inject headers."""
    return "\r" in value or "\n" in value
