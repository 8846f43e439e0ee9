"""The `mailer` command: database, apps, worker, simulator and the all-in-one dev system."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import psycopg

from mailer import cli_ops, cli_webhooks, logging_json
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
    create.set_defaults(handler=_apps_create)
    apps.add_parser("list", help="list apps").set_defaults(handler=_apps_list)
    revoke = apps.add_parser("revoke", help="revoke an app's API key")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_apps_revoke)
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


def _connect() -> psycopg.Connection:
    return psycopg.connect(Settings.from_env().require_database_url())


def _migrate(_: argparse.Namespace) -> int:
    from mailer.store import migrations

    settings = Settings.from_env()
    applied = migrations.migrate(settings.require_database_url())
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    # After the SQL: secrets stored in the clear (before 0020) or under a key no longer first get encrypted.
    print(cli_webhooks.reencrypt_secrets(settings))
    return 0


def _apps_create(args: argparse.Namespace) -> int:
    from mailer.services import apps

    with _connect() as conn:
        app, key = apps.create_app(conn, args.name)
    print(f"created app {app.name!r}; its API key (shown once):")
    print(key)
    return 0


def _apps_list(_: argparse.Namespace) -> int:
    from mailer import store

    with _connect() as conn:
        for app in store.list_apps(conn):
            state = f"revoked {app.revoked_at:%Y-%m-%d}" if app.revoked_at else "active"
            print(f"{app.name}\t{state}\tcreated {app.created_at:%Y-%m-%d %H:%M}Z\tkey mk_{app.key_id}_…")
    return 0


def _apps_revoke(args: argparse.Namespace) -> int:
    from mailer.services import apps

    with _connect() as conn:
        app = apps.revoke_app(conn, args.name)
    print(f"revoked app {app.name!r}")
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
