"""`mailer webhooks …`: the keys of the webhook secrets at rest (new-key, reencrypt)."""

from __future__ import annotations

import argparse
import sys

from cryptography.fernet import Fernet

from mailer import db
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


def encrypt_plaintext_secrets(settings: Settings) -> tuple[str, str | None]:
    """For `mailer db migrate`: encrypt secrets stored in the clear; a line saying so, and a warning or None."""
    from mailer.services import webhook_secrets

    with db.connect(settings.require_database_url(), settings, autocommit=True) as conn:
        done = webhook_secrets.reencrypt(conn, settings, plaintext_only=True)
    warning = None
    if done.unreadable:
        warning = (f"warning: {len(done.unreadable)} webhook endpoint(s) have secrets that no key of "
                   "MAILER_WEBHOOK_SECRET_KEYS decrypts; their deliveries fail until the key is back "
                   "(`mailer webhooks reencrypt` lists them)")
    return f"webhook secrets: {done.rewritten} of {done.examined} endpoints stored in the clear encrypted", warning


def _new_key(_: argparse.Namespace) -> int:
    print(Fernet.generate_key().decode("ascii"))
    return 0


def _reencrypt(_: argparse.Namespace) -> int:
    from mailer.services import webhook_secrets

    settings = Settings.from_env()
    with db.connect(settings.require_database_url(), settings, autocommit=True) as conn:
        done = webhook_secrets.reencrypt(conn, settings)
    print(f"webhook secrets: {done.rewritten} of {done.examined} endpoints encrypted anew")
    if not done.unreadable:
        return 0
    print(f"mailer: {len(done.unreadable)} webhook endpoint(s) have secrets that no key of "
          "MAILER_WEBHOOK_SECRET_KEYS decrypts (left as they are; put the dropped key back, or have the app "
          "rotate the secret): " + ", ".join(str(endpoint) for endpoint in done.unreadable), file=sys.stderr)
    return 1
