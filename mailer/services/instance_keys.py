"""Keys shared by every process of an installation when the environment sets none."""

from __future__ import annotations

import secrets

import psycopg

from mailer.store import instance_keys

KEY_BYTES = 32


def instance_key(conn: psycopg.Connection, name: str) -> bytes:
    """The installation's key `name` (32 random bytes made once, then the same for every process)."""
    for _ in range(2):  # a second ask sees the key of a process that made it at the same moment
        key = instance_keys.get_or_create_instance_key(conn, name=name, candidate=secrets.token_bytes(KEY_BYTES))
        if key is not None:
            return key
    raise RuntimeError(f"instance key {name!r} could not be read or made")
