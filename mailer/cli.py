"""The `mailer` command: database, apps, worker, simulator and the all-in-one dev system."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import psycopg

from mailer import cli_ops, cli_webhooks, db, logging_json
from mailer.config import ConfigError, Settings
from mailer.domain import errors


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:  # its own argparse takes every option after the word
        from mailer.mailjet import simulator

        simulator.main(argv[1:])
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    logging_json.configure()  # one JSON object per line on stderr, like web and worker
    try:
        return int(args.handler(args) or 0)
    except (ConfigError, errors.MailerError) as exc:
        print(f"mailer: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"mailer: cannot reach the database: {str(exc).strip()}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailer", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    db_cmd = commands.add_parser("db", help="database schema").add_subparsers(required=True, metavar="ACTION")
    db_cmd.add_parser("migrate", help="create or upgrade the schema (idempotent)").set_defaults(handler=_migrate)

    apps = commands.add_parser("apps", help="apps and their API keys").add_subparsers(required=True, metavar="ACTION")
    create = apps.add_parser("create", help="register an app and print its API key once")
    create.add_argument("name")
    _from_domain_option(create, or_else="without it: any domain")
    create.add_argument(
        "--test", action="store_true",
        help="a test app (key mk_test_…): every step runs but the Mailjet call, which mailer answers itself",
    )
    create.set_defaults(handler=_apps_create)
    apps.add_parser("list", help="list apps").set_defaults(handler=_apps_list)
    revoke = apps.add_parser(
        "revoke", help="stop an app: key refused, waiting jobs cancelled, schedules done, webhooks disabled"
    )
    revoke.add_argument("name")
    revoke.set_defaults(handler=_apps_revoke)
    domains = apps.add_parser("set-domains", help="change the domains an app may send from")
    domains.add_argument("name")
    choice = domains.add_mutually_exclusive_group(required=True)
    _from_domain_option(choice, or_else="replaces the app's list")
    choice.add_argument("--any-domain", action="store_true", help="lift the limit: any from domain")
    domains.set_defaults(handler=_apps_set_domains)
    rotate = apps.add_parser("rotate", help="give an app a new API key (the old one stops working)")
    rotate.add_argument("name")
    rotate.set_defaults(handler=_apps_rotate)

    commands.add_parser("worker", help="run a worker (sends, retries, tasks)").set_defaults(handler=_worker)
    dev = commands.add_parser("dev", help="run the whole system locally with a private Postgres and Mailjet simulator")
    dev.add_argument("--dir", default=".mailer-dev", help="where the private Postgres lives (default .mailer-dev)")
    dev.set_defaults(handler=_dev)
    commands.add_parser("simulator", help="run the Mailjet simulator (mailer simulator --help)")
    cli_ops.add_commands(commands)  # status, logs, retry, suppressions, retention
    cli_webhooks.add_commands(commands)  # webhooks new-key, reencrypt
    return parser


def _from_domain_option(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, *, or_else: str) -> None:
    parser.add_argument(
        "--from-domain", dest="from_domains", action="append", default=[], metavar="DOMAIN",
        help=f"the app may send only from this domain (exactly, any case; repeat for several; {or_else})",
    )


def _connect() -> psycopg.Connection:
    settings = Settings.from_env()
    return db.connect(settings.require_database_url(), settings)


def _migrate(_: argparse.Namespace) -> int:
    from mailer.store import migrations

    settings = Settings.from_env()
    # Direct: migrators serialize on a session advisory lock (sql/queries/migrations.sql).
    try:
        applied = migrations.migrate(settings.require_direct_database_url(),
                                     connect_timeout_s=settings.db_connect_timeout_s,
                                     lock_timeout_s=settings.migration_lock_timeout_s)
    except migrations.MigrationLockError as exc:  # an OperationalError's cause, not "cannot reach the database"
        print(f"mailer: {exc}", file=sys.stderr)
        return 2
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    # After the SQL: secrets stored in the clear (before 0020) get encrypted. Re-keying is left to
    # `mailer webhooks reencrypt`, so that a secret no key reads never fails a deploy.
    done, warning = cli_webhooks.encrypt_plaintext_secrets(settings)
    print(done)
    if warning:
        print(f"mailer: {warning}", file=sys.stderr)
    return 0


def _apps_create(args: argparse.Namespace) -> int:
    from mailer.services import apps

    with _connect() as conn:
        app, key = apps.create_app(conn, args.name, args.from_domains, test=args.test)
    kind = "test app (nothing it sends reaches Mailjet)" if app.test else "app"
    print(f"created {kind} {app.name!r}, {_sends_from(app.from_domains)}; its API key (shown once):")
    print(key)
    return 0


def _sends_from(from_domains: list[str] | None) -> str:
    return "sending from any domain" if from_domains is None else "sending from " + ", ".join(from_domains)


def _apps_list(_: argparse.Namespace) -> int:
    from mailer import store
    from mailer.services import apps

    with _connect() as conn:
        for app in store.list_apps(conn):
            state = f"revoked {app.revoked_at:%Y-%m-%d}" if app.revoked_at else "active"
            domains = "any domain" if app.from_domains is None else ",".join(app.from_domains)
            mode = "test" if app.test else "live"
            print(f"{app.name}\t{state}\t{mode}\tcreated {app.created_at:%Y-%m-%d %H:%M}Z\tkey {apps.key_hint(app)}"
                  f"\tfrom {domains}")
    return 0


def _apps_revoke(args: argparse.Namespace) -> int:
    from mailer.services import apps

    with _connect() as conn:
        revoked = apps.revoke_app(conn, args.name)
    print(f"revoked app {revoked.app.name!r}: its API key is refused from now on")
    print(f"jobs cancelled: {revoked.jobs_cancelled} (scheduled or queued; jobs already sending finish as they are)")
    print(f"schedules done: {revoked.schedules_done}")
    print(f"webhook endpoints disabled: {revoked.webhooks_disabled}")
    return 0


def _apps_set_domains(args: argparse.Namespace) -> int:
    from mailer.services import apps

    with _connect() as conn:
        app = apps.set_from_domains(conn, args.name, [] if args.any_domain else args.from_domains)
    print(f"app {app.name!r} is now {_sends_from(app.from_domains)} (for messages accepted from now on)")
    return 0


def _apps_rotate(args: argparse.Namespace) -> int:
    from mailer.services import apps

    with _connect() as conn:
        app, key = apps.rotate_key(conn, args.name)
    print(f"new API key for {app.name!r} (shown once; the old key no longer works):")
    print(key)
    return 0


def _worker(_: argparse.Namespace) -> int:
    from mailer import worker

    settings = Settings.from_env()
    logging_json.configure(settings)  # mask its secrets in every line
    worker.run(settings)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from mailer import devserver

    return devserver.run(args.dir)


if __name__ == "__main__":
    sys.exit(main())
