"""Keys the installation makes for itself and keeps in the database."""

from __future__ import annotations

import psycopg

from mailer.store import _run


def get_or_create_instance_key(conn: psycopg.Connection, *, name: str, candidate: bytes) -> bytes | None:
    """The key `name`, storing `candidate` if there was none (None: another process is making it now)."""
    row = _run.one_row(conn, "get_or_create_instance_key", name=name, key=candidate)
    return None if row is None else bytes(row["key"])
