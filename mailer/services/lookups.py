"""Ask Mailjet, several at a time, whether earlier attempts whose outcome is unknown were accepted; map what
it lists back to the jobs' stored recipients."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any

from mailer.mailjet import send as mailjet
from mailer.store.jobs import ClaimedJob

KINDS = ("to", "cc", "bcc")


@dataclasses.dataclass(frozen=True)
class Lookup:
    """What Mailjet said of one job: the recipients it lists under the job's CustomID, or why it did not say."""

    job: ClaimedJob
    found: tuple[mailjet.FoundRecipient, ...] = ()
    error: mailjet.SendError | None = None
    asked: bool = True  # False: the claim's deadline came before the lookup could start


@dataclasses.dataclass(frozen=True)
class Matched:
    """A confirmed job's recipients with their MessageIDs ((kind, position) as stored), and the recipients
    Mailjet lists no row for."""

    recipients: tuple[mailjet.AcceptedRecipient, ...]
    unmatched: tuple[tuple[str, int], ...]


def look_up(
    client: mailjet.MailjetClient, jobs: Sequence[ClaimedJob], throttle: Callable[[], bool], concurrency: int
) -> list[Lookup]:
    """One lookup per job, at most `concurrency` at once, each once `throttle` allows it; in the order of `jobs`."""
    # The throttle (the shared cap, the claim's deadline) is asked here, one lookup after the other as before,
    # once a thread is free: the lookup starts right after it allows it, never after the deadline.
    if not jobs:
        return []
    slots = threading.BoundedSemaphore(concurrency)

    def ask(job: ClaimedJob) -> Lookup:
        try:
            return Lookup(job, found=tuple(client.find_by_custom_id(str(job.id))))
        except mailjet.SendError as exc:
            return Lookup(job, error=exc)
        finally:
            slots.release()

    pending: list[concurrent.futures.Future[Lookup] | Lookup] = []
    with concurrent.futures.ThreadPoolExecutor(min(concurrency, len(jobs)), thread_name_prefix="mj-lookup") as pool:
        for job in jobs:
            slots.acquire()  # a free thread first, so the call starts as soon as the cap lets it
            if not throttle():
                slots.release()
                pending.append(Lookup(job, asked=False))
                continue
            pending.append(pool.submit(ask, job))
    return [item if isinstance(item, Lookup) else item.result() for item in pending]


def match(
    message: dict[str, Any], found: Sequence[mailjet.FoundRecipient], suppressed: Collection[tuple[str, int]]
) -> Matched:
    """Give each stored recipient of `message` a row of its address (case-insensitive), if one is left."""
    # Rows lowest MessageID first, recipients To, Cc, Bcc by position: an address listed twice gets both rows, in
    # a fixed order. Recipients suppressed now come last: the earlier attempt most likely left them out.
    rows: dict[str, collections.deque[mailjet.FoundRecipient]] = collections.defaultdict(collections.deque)
    for row in sorted(found, key=lambda row: row.message_id):
        rows[row.email.casefold()].append(row)
    stored = [(kind, position, str(address.get("email") or ""))
              for kind in KINDS for position, address in enumerate(message.get(kind) or [])]
    stored.sort(key=lambda recipient: (recipient[:2] in suppressed))  # stable: the order above otherwise
    recipients, unmatched = [], []
    for kind, position, email in stored:
        candidates = rows.get(email.casefold())
        if candidates:
            row = candidates.popleft()
            recipients.append(mailjet.AcceptedRecipient(kind, position, email, row.message_id, row.message_uuid))
        else:
            unmatched.append((kind, position))
    return Matched(tuple(recipients), tuple(unmatched))
