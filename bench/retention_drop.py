"""Retention by whole months: one month of history dropped from every partitioned parent, timed and sized."""

from __future__ import annotations

import dataclasses
import datetime as dt
import graphlib
import time
from collections.abc import Mapping

import psycopg

from mailer.store import partitions

# The tables that hold history, partitioned or not: their sizes and dead rows before and after the drop.
HISTORY = ("jobs", "recipients", "recipient_addresses", "job_events", "mailjet_events", "webhook_messages",
           "webhook_deliveries", "webhook_attempts", "idempotency_keys")
LOCK_TIMEOUT_MS = 5000  # nothing else runs meanwhile: a wait this long would be a finding
# Every leaf of each table's partition tree (a table that is not partitioned is its own leaf).
_LEAVES = """
SELECT coalesce(t.relid, to_regclass(h.name)) AS relid
FROM unnest(%(tables)s::text[]) AS h(name)
LEFT JOIN LATERAL pg_partition_tree(to_regclass(h.name)) AS t ON true
WHERE to_regclass(h.name) IS NOT NULL AND (t.relid IS NULL OR t.isleaf)
"""
_SIZES = f"""
SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint, coalesce(sum(pg_indexes_size(relid)), 0)::bigint,
       coalesce(sum(s.n_dead_tup), 0)::bigint
FROM ({_LEAVES}) AS l LEFT JOIN pg_stat_user_tables AS s USING (relid)
"""  # noqa: S608  # constants of this module
# Registered parents and the registered parents they reference: those that reference others go first.
_PARENTS = """
SELECT m.parent::text, coalesce(array_agg(r.parent::text) FILTER (WHERE r.parent IS NOT NULL), '{}')
FROM month_partitioned_tables AS m
LEFT JOIN pg_constraint AS c ON c.conrelid = m.parent AND c.contype = 'f' AND c.conparentid = 0
LEFT JOIN month_partitioned_tables AS r ON r.parent = c.confrelid AND r.parent <> m.parent
GROUP BY m.parent
"""
_MONTH_JOBS = """
SELECT count(*) FROM jobs
WHERE id >= mailer_month_bound('uuid7', %(month)s)::uuid AND id < mailer_month_bound('uuid7', %(next)s)::uuid
"""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Tables and indexes of the history tables, in bytes, and their dead rows (n_dead_tup)."""

    table_bytes: int
    index_bytes: int
    dead_rows: int


@dataclasses.dataclass(frozen=True)
class Dropped:
    """One month's drop: how many jobs it held, the parents it went through, the time, sizes before and after."""

    month: dt.date
    jobs: int
    parents: list[str]
    dropped: int
    seconds: float
    jobs_left: int
    before: Sizes
    after: Sizes
    error: str = ""  # why a drop failed (the others were not tried)


def measure(url: str, month: dt.date, next_month: dt.date) -> Dropped:
    """Drop `month` from every registered parent (referencing parents first), each in its own transaction
    as housekeeping does; the whole timed. With no parent registered nothing is dropped (parents == [])."""
    with psycopg.connect(url, autocommit=True) as conn:
        bounds = {"month": month, "next": next_month}
        jobs = _count(conn, _MONTH_JOBS, bounds)
        conn.execute("VACUUM ANALYZE")  # what the runs before left behind is not the drop's
        time.sleep(1.0)  # table statistics reach pg_stat_user_tables within a second
        before = _sizes(conn)
        references = {str(parent): set(refs) for parent, refs in conn.execute(_PARENTS).fetchall()}
        order = list(reversed(list(graphlib.TopologicalSorter(references).static_order())))
        dropped, error = 0, ""
        started = time.perf_counter()
        try:
            for parent in order:
                dropped += partitions.drop_month_partition(conn, parent, month, LOCK_TIMEOUT_MS)
        except psycopg.Error as exc:  # a finding for the table, not the end of the benchmark
            error = f"{parent}: {str(exc).splitlines()[0]}"
        seconds = time.perf_counter() - started
        time.sleep(1.0)
        return Dropped(month=month, jobs=jobs, parents=order, dropped=dropped, seconds=seconds,
                       jobs_left=_count(conn, _MONTH_JOBS, bounds), before=before, after=_sizes(conn), error=error)


def _count(conn: psycopg.Connection, sql: str, params: Mapping[str, object]) -> int:
    return int(conn.execute(sql, params).fetchone()[0])  # type: ignore[arg-type,index]  # constants above


def _sizes(conn: psycopg.Connection) -> Sizes:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    tables, indexes, dead = conn.execute(_SIZES, {"tables": list(HISTORY)}).fetchone()  # type: ignore[arg-type,misc]
    return Sizes(table_bytes=int(tables), index_bytes=int(indexes), dead_rows=int(dead))


def gib(size: int) -> str:
    """'1.23 GB' (GiB) or '456 MB' (MiB)."""
    return f"{size / 2**30:.2f} GB" if size >= 2**30 else f"{size / 2**20:.0f} MB"
