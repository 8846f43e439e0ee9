"""Token buckets for rate limits shared by every process."""

from __future__ import annotations

import dataclasses

import psycopg

from mailer.store import _run


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether tokens were granted; if not, the seconds until enough of them exist."""

    granted: bool
    retry_after_s: float


def take_rate_limit_tokens(
    conn: psycopg.Connection, *, key: str, rate_per_s: float, burst: float, cost: float
) -> Decision:
    """Refill bucket `key` for the time elapsed and take `cost` tokens if that many are there."""
    row = _run.one_row(
        conn, "take_rate_limit_tokens", key=key, rate=float(rate_per_s), burst=float(burst), cost=float(cost)
    )
    assert row is not None  # noqa: S101  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always returns the row
    return Decision(granted=row["granted"], retry_after_s=float(row["retry_after_s"]))


@dataclasses.dataclass(frozen=True)
class Lease:
    """Whole tokens a lease took (0: none); with none, the seconds until one exists."""

    taken: int
    retry_after_s: float


def lease_rate_limit_tokens(
    conn: psycopg.Connection, *, key: str, rate_per_s: float, burst: float, want: int, returned: int
) -> Lease:
    """Give `returned` unused tokens back to bucket `key`, then take up to `want` of those it has."""
    row = _run.one_row(
        conn, "lease_rate_limit_tokens", key=key, rate=float(rate_per_s), burst=float(burst), want=float(want),
        returned=float(returned),
    )
    assert row is not None  # noqa: S101  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always returns the row
    return Lease(taken=int(row["taken"]), retry_after_s=float(row["retry_after_s"]))


def delete_idle_rate_limit_buckets(conn: psycopg.Connection, *, prefix: str, idle_s: float) -> None:
    """Remove the buckets of `prefix` untouched for `idle_s` seconds (full again, as good as absent)."""
    _run.all_rows(conn, "delete_idle_rate_limit_buckets", prefix=prefix, idle_s=float(idle_s))


def peek_rate_limit_tokens(
    conn: psycopg.Connection, *, key: str, rate_per_s: float, burst: float, cost: float
) -> Decision:
    """Whether bucket `key` has `cost` tokens now (a rate above 0), without taking them."""
    row = _run.one_row(
        conn, "peek_rate_limit_tokens", key=key, rate=float(rate_per_s), burst=float(burst), cost=float(cost)
    )
    wait = 0.0 if row is None else float(row["retry_after_s"])
    return Decision(granted=wait <= 0, retry_after_s=wait)
