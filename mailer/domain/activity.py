"""The activity feed's cursor and type filter: what a client sends, checked."""

from __future__ import annotations

import base64
import binascii
import re

from mailer.domain.webhooks import EVENT_NAMES

# A position in the feed: (transaction id, row id) of the last change seen. xid8 is 64 bits unsigned; row ids are
# bigint identities.
MAX_XID = 2**64 - 1
MAX_ID = 2**63 - 1
START = (0, 0)
MAX_CURSOR_LENGTH = 64
_CURSOR = re.compile(r"^[A-Za-z0-9_-]+$")
_PAYLOAD = re.compile(r"^a1\.([0-9]{1,20})\.([0-9]{1,19})$")
TYPE_PREFIX = "email."


def encode_cursor(xid: int, row_id: int) -> str:
    """An opaque cursor for the position just after (xid, row_id): base64url, no padding."""
    return base64.urlsafe_b64encode(f"a1.{xid}.{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """The (xid, row id) a cursor stands for; ValueError when it is not one of ours."""
    if len(cursor) > MAX_CURSOR_LENGTH or not _CURSOR.match(cursor):
        raise ValueError("not a cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor") from None
    found = _PAYLOAD.match(raw)
    if found is None:
        raise ValueError("not a cursor")
    xid, row_id = int(found[1]), int(found[2])
    if xid > MAX_XID or row_id > MAX_ID:
        raise ValueError("not a cursor")
    return xid, row_id


def parse_types(value: str) -> list[str]:
    """The statuses a comma-separated `types` names (`email.delivered` or `delivered`); ValueError naming an
    unknown one."""
    wanted: list[str] = []
    for part in value.split(","):
        name = part.strip().removeprefix(TYPE_PREFIX)
        if name not in EVENT_NAMES:
            known = ", ".join(TYPE_PREFIX + n for n in EVENT_NAMES)
            raise ValueError(f"unknown type {part.strip()[:50]!r}; one of {known}")
        if name not in wanted:
            wanted.append(name)
    return wanted
