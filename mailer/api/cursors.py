"""The opaque cursors of keyset-paginated lists ordered by (created_at, id): /schedules, /templates."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from typing import Any

from mailer.domain import errors


def encode(row: dict[str, Any]) -> str:
    """The cursor that continues after this row."""
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """(created_at, id) of a cursor this API gave out; 422 for anything else."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(data, list) and len(data) == 2 and all(isinstance(value, str) for value in data)):
            raise ValueError("not a cursor")
        created_at, row_id = dt.datetime.fromisoformat(data[0]), uuid.UUID(data[1])
        if created_at.tzinfo is None:
            raise ValueError("not a cursor")
    except (ValueError, binascii.Error, RecursionError):  # UnicodeDecodeError is a ValueError
        raise errors.ValidationFailed("cursor is not one this API gave out", {"cursor": ["invalid"]}) from None
    return created_at, row_id
