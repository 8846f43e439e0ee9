"""Partition housekeeping: month partitions of history made ahead, and past the horizon dropped whole."""

from __future__ import annotations

import dataclasses
import datetime
import logging

import psycopg

from mailer.config import Settings
from mailer.services import retention
from mailer.store import partitions as store

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Maintained:
    """What one housekeeping run did."""

    created: int
    dropped: int
    failed: tuple[str, ...] = ()


def maintain(conn: psycopg.Connection, settings: Settings, now: datetime.datetime) -> Maintained:
    """Create the months ahead of every registered parent, then let retention drop the expired ones."""
    with conn.transaction():
        created, failed = store.ensure_registered_partitions(
            conn, now.date(), ahead=settings.partitions_ahead_months,
            lock_timeout_ms=settings.partition_lock_timeout_ms)
    if failed:
        log.warning("partitions: months ahead not made for %s (next run tries again; see the database log)",
                    ", ".join(failed))
    dropped = retention.drop_expired_partitions(conn, settings, now)
    if created or dropped:
        log.info("partitions: %d created, %d dropped", created, dropped)
    return Maintained(created=created, dropped=dropped, failed=tuple(failed))
