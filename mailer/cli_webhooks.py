"""`mailer webhooks …`: the keys of the webhook secrets at rest (new-key, reencrypt)."""

from __future__ import annotations

import argparse

import psycopg
from cryptography.fernet import Fernet

from mailer.config import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `mailer webhooks new-key` and `mailer webhooks reencrypt`."""
    webhooks = commands.add_parser("webhooks", help="outbound webhooks: the keys of their secrets").add_subparsers(
        required=True, metavar="ACTION"
    )
    webhooks.add_parser(
        "new-key", help="print a new key for MAILER_WEBHOOK_SECRET_KEYS (put it first, then run reencrypt)"
    ).set_defaults(handler=_new_key)
    webhooks.add_parser(
        "reencrypt", help="encrypt every webhook secret with the first key of MAILER_WEBHOOK_SECRET_KEYS"
    ).set_defaults(handler=_reencrypt)


def reencrypt_secrets(settings: Settings) -> str:
    """Encrypt every stored webhook secret with the current first key; a line saying what was done."""
    from mailer.services import webhook_secrets

    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        done = webhook_secrets.reencrypt(conn, settings)
    return f"webhook secrets: {done.rewritten} of {done.examined} endpoints encrypted anew"


def _new_key(_: argparse.Namespace) -> int:
    print(Fernet.generate_key().decode("ascii"))
    return 0


def _reencrypt(_: argparse.Namespace) -> int:
    settings = Settings.from_env()
    print(reencrypt_secrets(settings))
    return 0
