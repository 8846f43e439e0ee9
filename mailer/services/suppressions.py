"""Suppression lists: the API's use cases, and screening a send batch against the lists."""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from mailer import store
from mailer.domain import errors
from mailer.domain.timefmt import rfc3339
from mailer.store.jobs import ClaimedJob
from mailer.store.suppressions import Suppression

KINDS = ("to", "cc", "bcc")
API_SOURCE = "api"
ALL, BULK = "all", "bulk"  # scopes: every message, or the app's bulk mail only
MAX_EMAIL = 320  # longer than any address the API accepts: such a path or cursor cannot name an entry


# --- the API's use cases -----------------------------------------------------------------------------


def add(
    conn: psycopg.Connection, *, app_id: int, email: str, reason: str | None, scope: str = ALL
) -> tuple[dict[str, Any], bool]:
    """Put an address on the app's list; the entry, and whether it is new (an existing one is unchanged,
    except that scope `all` widens a `bulk` one)."""
    with conn.transaction():
        # Read committed: each statement sees what a concurrent POST or DELETE committed before it.
        for _ in range(3):
            added = store.insert_suppression(
                conn, app_id=app_id, email=email, reason=reason, source=API_SOURCE, scope=scope
            )
            if added is not None:
                return shown(added), True
            if scope == ALL and (widened := store.widen_suppression(conn, app_id=app_id, email=email)):
                return shown(widened), False
            existing = store.get_suppression(conn, app_id=app_id, email=email)
            if existing is not None:
                return shown(existing), False
    raise errors.Conflict(f"{email} is being added and removed concurrently; try again")


def remove(conn: psycopg.Connection, *, app_id: int, email: str) -> None:
    """Take an address off the app's list (NotFound when it is not there)."""
    if not _plausible(email) or not store.delete_suppression(conn, app_id=app_id, email=email):
        raise errors.NotFound(f"{email} is not on the suppression list")


def list_page(
    conn: psycopg.Connection, *, app_id: int, limit: int, cursor: str | None = None, email: str | None = None
) -> dict[str, Any]:
    """One page of the app's list, newest first, with the cursor of the next page (None at the end)."""
    after = decode_cursor(cursor) if cursor else None
    rows = store.list_suppressions(conn, app_id=app_id, limit=limit + 1, email=email, after=after)
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [shown(row) for row in page],
        "next_cursor": encode_cursor(page[-1]) if more else None,
    }


def shown(entry: Suppression) -> dict[str, Any]:
    """An entry as the API shows it."""
    return {"email": entry.email, "reason": entry.reason, "source": entry.source, "scope": entry.scope,
            "created_at": rfc3339(entry.created_at)}


def encode_cursor(entry: Suppression) -> str:
    """An opaque cursor: the keyset position (created_at to the microsecond, email) of the last entry."""
    raw = json.dumps([entry.created_at.isoformat(), entry.email], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """The keyset position in a cursor (ValidationFailed for anything this API did not hand out)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, email = json.loads(raw)
        when = dt.datetime.fromisoformat(created_at)
        if not isinstance(email, str) or when.tzinfo is None or not _plausible(email):
            raise ValueError("not a cursor")
    except (binascii.Error, ValueError, TypeError, RecursionError):  # UnicodeError is a ValueError
        raise errors.ValidationFailed(
            "cursor is not a cursor from GET /suppressions", {"cursor": ["is not a valid cursor"]}
        ) from None
    return when, email


def _plausible(email: str) -> bool:
    """Whether a string could be a stored address (Postgres cannot even compare one with NUL)."""
    return bool(email) and len(email) <= MAX_EMAIL and "\x00" not in email and _utf8(email)


def _utf8(text: str) -> bool:
    """Whether a string is Unicode text Postgres can take (a lone surrogate from a \\ud800 escape is not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- screening a send batch ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Screening:
    """What is left of a claimed job's message once its suppressed recipients are taken out."""

    message: dict[str, Any]
    skipped: tuple[tuple[str, int], ...]  # (kind, position) of each suppressed recipient
    # (kind, index) in the message as sent -> (kind, position) in the message as queued
    origin: dict[tuple[str, int], tuple[str, int]]
    problem: str | None = None  # why what is left cannot be sent

    @property
    def nothing_left(self) -> bool:
        """Every recipient is suppressed."""
        return not self.origin

    def original(self, kind: str, index: int) -> tuple[str, int]:
        """The queued (kind, position) of the recipient Mailjet reports at (kind, index) of what was sent."""
        return self.origin.get((kind, index), (kind, index))


@dataclasses.dataclass
class Screened:
    """A batch split by screening: what to send, what is wholly suppressed, what cannot be sent."""

    to_send: list[ClaimedJob] = dataclasses.field(default_factory=list)
    suppressed: list[ClaimedJob] = dataclasses.field(default_factory=list)
    unsendable: list[tuple[ClaimedJob, str]] = dataclasses.field(default_factory=list)
    screenings: dict[uuid.UUID, Screening] = dataclasses.field(default_factory=dict)


def screen(conn: psycopg.Connection, jobs: Sequence[ClaimedJob]) -> dict[uuid.UUID, Screening]:
    """One lookup for the whole batch: the jobs that have suppressed recipients, and what is left of each."""
    rows = store.list_suppressed_recipients(conn, job_ids=[job.id for job in jobs])
    skipped: dict[uuid.UUID, set[tuple[str, int]]] = collections.defaultdict(set)
    for row in rows:
        skipped[row["job_id"]].add((row["kind"], row["position"]))
    return {job.id: without(job.message, skipped[job.id]) for job in jobs if job.id in skipped}


def split(jobs: Sequence[ClaimedJob], screenings: dict[uuid.UUID, Screening]) -> Screened:
    """Apply the screenings to the jobs about to be sent."""
    screened = Screened()
    for job in jobs:
        screening = screenings.get(job.id)
        if screening is None:
            screened.to_send.append(job)
            continue
        screened.screenings[job.id] = screening
        if screening.nothing_left:
            screened.suppressed.append(job)
        elif screening.problem:
            screened.unsendable.append((job, screening.problem))
        else:
            screened.to_send.append(dataclasses.replace(job, message=screening.message))
    return screened


def without(message: dict[str, Any], skipped: set[tuple[str, int]]) -> Screening:
    """`message` without the recipients at these (kind, position)s, with the way back to the positions."""
    kept: dict[str, list[tuple[str, int, dict[str, Any]]]] = {
        kind: [(kind, position, address) for position, address in enumerate(message.get(kind) or [])
               if (kind, position) not in skipped]
        for kind in KINDS
    }
    problem = None
    if not kept["to"]:
        # Mailjet needs a To recipient (mj-0003). Cc recipients see each other anyway, so they move
        # up to To; so does a lone Bcc recipient, whom nobody else then sees.
        if kept["cc"]:
            kept["to"], kept["cc"] = kept["cc"], []
        elif len(kept["bcc"]) == 1:
            kept["to"], kept["bcc"] = kept["bcc"], []
        elif kept["bcc"]:
            problem = ("every To and Cc recipient is suppressed; the Bcc recipients were not sent to, since "
                       "Mailjet needs a To recipient and moving them there would show them to each other")
    remaining = dict(message)
    origin: dict[tuple[str, int], tuple[str, int]] = {}
    for kind in KINDS:
        remaining[kind] = [address for _, _, address in kept[kind]]
        for index, (queued_kind, position, _) in enumerate(kept[kind]):
            origin[(kind, index)] = (queued_kind, position)
    return Screening(message=remaining, skipped=tuple(sorted(skipped)), origin=origin, problem=problem)
