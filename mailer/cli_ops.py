"""The operator's commands of `mailer`: status, logs, retry, suppressions, retention. Like `mailer apps`,
they talk to the database directly and see every app; mailer.cli turns their errors into exit status 2."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

import psycopg

from mailer import db
from mailer.config import Settings
from mailer.domain import statuses

LOGS_DEFAULT_LIMIT = 20
FOLLOW_INTERVAL_S = 1.0


def add_commands(commands: Any) -> None:
    """Register the operator's subcommands on the `mailer` parser's subparsers."""
    status = commands.add_parser("status", help="a job's whole story as JSON (as GET /status shows it)")
    status.add_argument("id")
    status.set_defaults(handler=_status)

    logs = commands.add_parser("logs", help="recent jobs of every app, one line each; --follow for live changes")
    logs.add_argument("--app", help="only this app's jobs")
    logs.add_argument("--status", choices=statuses.JOB_STATUSES, help="only jobs in (with --follow: entering) it")
    logs.add_argument("--limit", type=_limit, default=LOGS_DEFAULT_LIMIT, help="jobs to list (1-1000, default 20)")
    logs.add_argument("--follow", "-f", action="store_true", help="then print every new job and change until Ctrl-C")
    logs.set_defaults(handler=_logs)

    retry = commands.add_parser("retry", help="queue a failed job again (keeps its id and history)")
    retry.add_argument("id")
    retry.set_defaults(handler=_retry)

    suppressions = commands.add_parser("suppressions", help="an app's suppression list").add_subparsers(
        required=True, metavar="ACTION"
    )
    listing = suppressions.add_parser("list", help="the app's list, newest first")
    listing.add_argument("--app", required=True)
    listing.set_defaults(handler=_suppressions_list)
    add = suppressions.add_parser("add", help="put an address on the app's list")
    add.add_argument("--app", required=True)
    add.add_argument("email")
    add.add_argument("--reason")
    add.set_defaults(handler=_suppressions_add)
    remove = suppressions.add_parser("remove", help="take an address off the app's list")
    remove.add_argument("--app", required=True)
    remove.add_argument("email")
    remove.set_defaults(handler=_suppressions_remove)

    retention = commands.add_parser("retention", help="purge old bodies, drop old months of jobs").add_subparsers(
        required=True, metavar="ACTION"
    )
    run = retention.add_parser("run", help="run retention once now and print what it removed")
    run.add_argument("--budget", type=float, default=None, metavar="SECONDS", help="stop after this long")
    run.set_defaults(handler=_retention_run)


def _limit(raw: str) -> int:
    value = int(raw) if raw.isdigit() else 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 1000, not {raw!r}")
    return value


def _connect(*, autocommit: bool = False) -> psycopg.Connection:
    settings = Settings.from_env()
    return db.connect(settings.require_database_url(), settings, autocommit=autocommit)


def _status(args: argparse.Namespace) -> int:
    from mailer.api import json_provider
    from mailer.services import operator, status

    job_id = operator.parse_job_id(args.id)
    with _connect() as conn:
        story = status.job_status(conn, app_id=operator.app_of_job(conn, job_id), job_id=job_id)
    sys.stdout.buffer.write(json_provider.encode(story))  # the very bytes GET /status/{id} answers
    return 0


def _logs(args: argparse.Namespace) -> int:
    from mailer.services import operator

    with _connect(autocommit=True) as conn:
        app_id = None if args.app is None else operator.app_id_by_name(conn, args.app)
        tail = operator.Tail.from_now(conn) if args.follow else None
        for line in operator.recent_jobs(conn, limit=args.limit, app_id=app_id, status=args.status):
            print(line, flush=True)
        if tail is None:
            return 0
        try:
            while True:
                for line in tail.poll(conn, app_id=app_id, status=args.status):
                    print(line, flush=True)
                if not tail.behind:
                    time.sleep(FOLLOW_INTERVAL_S)
        except KeyboardInterrupt:
            return 0


def _retry(args: argparse.Namespace) -> int:
    from mailer.services import actions, operator

    settings = Settings.from_env()
    job_id = operator.parse_job_id(args.id)
    with _connect() as conn:
        app_id = operator.app_of_job(conn, job_id)
        result = actions.retry(conn, app_id=app_id, job_id=job_id, batch_size=settings.send_batch_size)
    print(json.dumps(result))
    return 0


def _suppressions_list(args: argparse.Namespace) -> int:
    from mailer.services import operator, suppressions

    with _connect() as conn:
        app_id = operator.app_id_by_name(conn, args.app)
        cursor = None
        while True:
            page = suppressions.list_page(conn, app_id=app_id, limit=1000, cursor=cursor)
            for entry in page["items"]:
                print("\t".join((entry["email"], entry["source"], entry["created_at"], entry["reason"] or "")))
            cursor = page["next_cursor"]
            if cursor is None:
                return 0


def _suppressions_add(args: argparse.Namespace) -> int:
    from mailer.services import operator, suppressions

    loaded = _valid_suppression(args.email, args.reason)
    with _connect() as conn:
        app_id = operator.app_id_by_name(conn, args.app)
        entry, created = suppressions.add(conn, app_id=app_id, email=loaded["email"], reason=loaded["reason"])
    print(f"{'added' if created else 'already on the list (unchanged)'}: {entry['email']}")
    return 0


def _valid_suppression(email: str, reason: str | None) -> dict[str, Any]:
    """The same rules as POST /suppressions (ValidationFailed naming each bad field)."""
    from marshmallow import ValidationError

    from mailer.api import schemas
    from mailer.domain import errors

    try:
        return schemas.SuppressionSchema().load({"email": email, "reason": reason})
    except ValidationError as exc:
        problems = "; ".join(f"{field}: {' '.join(map(str, messages))}"
                             for field, messages in exc.normalized_messages().items())
        raise errors.ValidationFailed(f"not a valid suppression ({problems})") from None


def _suppressions_remove(args: argparse.Namespace) -> int:
    from mailer.services import operator, suppressions

    with _connect() as conn:
        app_id = operator.app_id_by_name(conn, args.app)
        suppressions.remove(conn, app_id=app_id, email=args.email)
    print(f"removed: {args.email}")
    return 0


def _retention_run(args: argparse.Namespace) -> int:
    from mailer.services import retention

    settings = Settings.from_env()
    with _connect(autocommit=True) as conn:
        removed = retention.run(conn, retention.Policy.from_settings(settings), budget_s=args.budget)
        dropped = retention.drop_expired_partitions(conn, settings, datetime.datetime.now(datetime.UTC))
    print(f"bodies purged: {removed.bodies_purged}")
    print(f"month partitions dropped: {dropped}")
    print(f"unmatched Mailjet events deleted: {removed.unmatched_events_deleted}")
    print(f"finished queue jobs deleted: {removed.queue_jobs_deleted}")
    print(f"finished webhook replays deleted: {removed.webhook_replays_deleted}")
    if not removed.complete:
        print("stopped at the time budget; run it again to continue")
    return 0
