"""Accept email: jobs, recipients and their wake-ups commit together, so a 202 is durable."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from mailer import metrics, store
from mailer.domain import errors, ids, senders
from mailer.services import wakeups
from mailer.store import apps as apps_store

RECIPIENT_KINDS = ("to", "cc", "bcc")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Accepted:
    """What the API answers: a status code and a JSON body."""

    status_code: int
    body: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class NewJob:
    """A validated message with its sending options."""

    message: dict[str, Any]
    priority: str = "transactional"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    send_at: Any = None  # an aware datetime or None
    schedule_id: uuid.UUID | None = None
    request_id: str | None = None  # of the API call that queued it (logged by the worker with each step)
    template_id: uuid.UUID | None = None  # the stored template it was rendered from (services/template_messages.py)
    template_version: int | None = None
    id: uuid.UUID = dataclasses.field(default_factory=ids.uuid7)  # time-ordered: see domain/ids.py


def request_fingerprint(body: Any) -> str:
    """A hash of a request body that ignores key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def accept(
    conn: psycopg.Connection,
    *,
    app_id: int,
    jobs: Sequence[NewJob] | Callable[[], Sequence[NewJob]],
    batch: bool,
    batch_size: int,
    idempotency_key: str | None = None,
    idempotency_days: int = 365,
    request_hash: str = "",
    key_id_to_confirm: str | None = None,
) -> Accepted:
    """Store jobs and wake the senders in one transaction; honour Idempotency-Key.

    Without a key, on an autocommit connection, the one insert statement is that transaction: two round
    trips (BEGIN, COMMIT) fewer per request. `jobs` may be a function that makes them (messages rendered from
    stored templates): it runs after a replay is ruled out, so a replay answers as the first request did even
    once its template has changed or gone.
    """
    single_statement = idempotency_key is None and conn.autocommit
    with contextlib.nullcontext() if single_statement else conn.transaction():
        if idempotency_key is not None:
            replay = _replay(conn, app_id, idempotency_key, request_hash, idempotency_days)
            if replay is not None:
                return replay
        made = jobs() if callable(jobs) else jobs
        try:
            answers = insert(conn, app_id, made, batch_size, key_id_to_confirm, count_on_waiting=True, check_from=True)
        except FromNotAllowed as refused:
            raise refused.validation_error(batch=batch) from None
        accepted = Accepted(202, {"jobs": answers} if batch else answers[0])
        if idempotency_key is not None:
            store.insert_idempotency_key(
                conn,
                app_id=app_id,
                key=idempotency_key,
                request_hash=request_hash,
                response_status=accepted.status_code,
                response_body=accepted.body,
            )
    for job, answer in zip(made, answers, strict=True):
        log.info("job %s", answer["status"], extra={"job_id": answer["id"], "app_id": app_id,
                                                    "status": answer["status"], "request_id": job.request_id})
    metrics.jobs_reached((answer["status"], job.priority) for job, answer in zip(made, answers, strict=True))
    return accepted


def _replay(conn: psycopg.Connection, app_id: int, key: str, request_hash: str, days: int) -> Accepted | None:
    # The lock makes the key unique in its window: idempotency_keys is partitioned by month (migration 0029),
    # so no unique index spans the months a key may be looked up in.
    if not store.lock_idempotency_key(conn, app_id=app_id, key=key):
        raise errors.Conflict("a request with this Idempotency-Key is still being handled; retry shortly")
    earlier = store.get_idempotency_key(conn, app_id=app_id, key=key, days=days)
    if earlier is None:
        return None
    if earlier["request_hash"] != request_hash:
        raise errors.ValidationFailed(
            "this Idempotency-Key was used with a different request body",
            {"Idempotency-Key": ["already used with a different body"]},
        )
    return Accepted(earlier["response_status"], earlier["response_body"])


def insert(
    conn: psycopg.Connection,
    app_id: int,
    jobs: Sequence[NewJob],
    batch_size: int,
    key_id_to_confirm: str | None = None,
    *,
    count_on_waiting: bool = False,
    check_from: bool = False,
) -> list[dict[str, str]]:
    """Store jobs with their recipients and wake-ups in one statement; [{id, status}] in order."""
    # In the caller's transaction, if any. With key_id_to_confirm nothing is stored (Unauthorized) unless it
    # is still the app's active key id; with check_from nothing (FromNotAllowed) unless the app may send from
    # every message's domain; count_on_waiting is for short transactions only (migration 0015).
    job_ids = [job.id for job in jobs]
    job_rows = [
        {"id": job.id, "priority": job.priority, "message": job.message, "metadata": job.metadata,
         "send_at": job.send_at, "schedule_id": job.schedule_id, "request_id": job.request_id,
         "template_id": job.template_id, "template_version": job.template_version}
        for job in jobs
    ]
    recipient_rows = [
        {"job_id": job_id, "kind": kind, "position": position, "email": address["email"],
         "name": address.get("name")}
        for job_id, job in zip(job_ids, jobs, strict=True)
        for kind in RECIPIENT_KINDS
        for position, address in enumerate(job.message.get(kind) or [])
    ]
    # The statement decides, with the app's domains as they are when it runs: no lookup beforehand.
    from_domains = sorted({from_domain(job.message) for job in jobs}) if check_from else None
    inserted = store.insert_jobs(
        conn, app_id=app_id, key_id=key_id_to_confirm, jobs=job_rows, recipients=recipient_rows,
        wake=wakeups.send_target(batch_size), count_on_waiting=count_on_waiting, from_domains=from_domains,
    )
    if jobs and not inserted and (key_id_to_confirm is not None or check_from):
        raise _refusal(conn, app_id, key_id_to_confirm, jobs)
    return [{"id": str(job_id), "status": inserted[job_id]["status"]} for job_id in job_ids]


def from_domain(message: dict[str, Any]) -> str:
    """The domain of a message's `from` address, as sending domains are compared."""
    return senders.domain_of(message["from"]["email"])


class FromNotAllowed(Exception):
    """Messages whose `from` domain their app may not use (mailer apps create --from-domain)."""

    def __init__(self, indexes: list[int], domains: list[str], allowed: Sequence[str]) -> None:
        super().__init__(f"from domains not allowed: {', '.join(sorted(set(domains)))}")
        self.indexes, self.domains, self.allowed = indexes, domains, allowed

    def validation_error(self, *, batch: bool) -> errors.ValidationFailed:
        """The 422 naming `from` (in a batch, under each refused message's index, as schema errors are)."""
        problems = [{"from": [senders.refusal(domain, self.allowed)]} for domain in self.domains]
        details = (
            {"messages": {str(index): problem for index, problem in zip(self.indexes, problems, strict=True)}}
            if batch else problems[0]
        )
        first = f" (message {self.indexes[0]})" if batch else ""
        return errors.ValidationFailed(f"{senders.refusal(self.domains[0], self.allowed)}{first}", details)


def refuse_disallowed_from(conn: psycopg.Connection, app_id: int, messages: Sequence[dict[str, Any]]) -> None:
    """FromNotAllowed unless the app may send from each message's domain (its domains as stored now)."""
    rules = apps_store.get_app_sending_rules(conn, app_id=app_id)
    refused = _disallowed(None if rules is None else rules["from_domains"], messages)
    if refused is not None:
        raise refused


def _disallowed(allowed: Sequence[str] | None, messages: Sequence[dict[str, Any]]) -> FromNotAllowed | None:
    domains = [from_domain(message) for message in messages]
    refused = [index for index, domain in enumerate(domains) if not senders.allows(allowed, domain)]
    if not refused:
        return None
    metrics.from_refused(len(refused))
    return FromNotAllowed(refused, [domains[index] for index in refused], allowed or [])


def _refusal(conn: psycopg.Connection, app_id: int, key_id: str | None, jobs: Sequence[NewJob]) -> Exception:
    """Why insert_jobs stored nothing: the key is no longer active (Unauthorized), or a from domain."""
    rules = apps_store.get_app_sending_rules(conn, app_id=app_id)
    if rules is None or (key_id is not None and (rules["key_id"] != key_id or rules["revoked_at"] is not None)):
        return errors.Unauthorized("invalid or revoked API key")
    refused = _disallowed(rules["from_domains"], [job.message for job in jobs])
    # None: the app's domains changed between the statement and this read; nothing was stored.
    return refused or errors.Conflict("the app's sending domains changed while the request was handled; send it again")
