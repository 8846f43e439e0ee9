"""Actions on one job that may wait for its row while another transaction moves it between partitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg

T = TypeVar("T")

# Tries of an action whose rows keep moving under it; one more than needed, as each move ends the race.
MOVED_ATTEMPTS = 3


def again_if_moved(action: Callable[[], T]) -> T:
    """Run `action` (its own whole transaction) again when a row it waited for was moved to another partition.

    Ending a job moves its row from jobs_live to jobs_done, and a retry moves it back (0028). PostgreSQL does not
    follow a row moved to another partition by the transaction it waited for: the waiting statement fails with
    a serialization error (SQLSTATE 40001) where it would have read the new row. A new try reads it.
    """
    for attempt in range(1, MOVED_ATTEMPTS + 1):
        try:
            return action()
        except psycopg.errors.SerializationFailure:
            if attempt == MOVED_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
