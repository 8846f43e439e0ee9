"""How far behind a replica is: from the primary's WAL positions over time, else from the replica's own view."""

from __future__ import annotations

from typing import Any

import pytest

from mailer.config import Settings
from mailer.services import read_replica
from mailer.services.read_replica import LagClock, judge


def position(replayed: int | None, *, received: int | None = None, age: float | None = 600.0,
             in_recovery: bool = True) -> dict[str, Any]:
    return {"in_recovery": in_recovery, "received_bytes": replayed if received is None else received,
            "replayed_bytes": replayed, "replay_age_s": age}


def clock_of(*samples: tuple[float, int]) -> LagClock:
    clock = LagClock(horizon_s=100)
    for at, written in samples:
        clock.record(at, written)
    return clock


def test_a_replica_with_all_the_primary_had_written_is_not_behind_however_old_its_last_commit():
    clock = clock_of((0, 100), (1, 100), (2, 100))  # an idle primary: the last commit may be hours old
    health = judge(position(100, age=7200), primary_known=True, clock=clock, now=2.5, max_lag_s=30)
    assert (health.reason, health.lag_s) == (None, 0.0)


def test_a_replica_is_behind_by_the_time_since_the_primary_stood_where_it_stands():
    clock = clock_of((0, 100), (10, 200), (20, 300), (40, 400))
    assert clock.lag_s(now=41, replayed_bytes=250) == 31  # it has what the primary had at 10, not at 20
    assert clock.lag_s(now=41, replayed_bytes=100) == 41
    assert clock.lag_s(now=41, replayed_bytes=400) == 0
    assert clock.lag_s(now=41, replayed_bytes=50) is None  # older than every sample kept
    lagging = judge(position(250, age=1), primary_known=True, clock=clock, now=41, max_lag_s=30)
    assert (lagging.reason, lagging.lag_s) == (read_replica.LAGGING, 31)
    fit = judge(position(250, age=1), primary_known=True, clock=clock, now=41, max_lag_s=35)
    assert (fit.reason, fit.lag_s) == (None, 31)


def test_without_a_sample_old_enough_the_age_of_the_last_replayed_commit_decides():
    clock = clock_of((0, 500))
    assert judge(position(100, age=12.5), primary_known=True, clock=clock, now=1, max_lag_s=30).lag_s == 12.5
    assert judge(position(100, age=45), primary_known=True, clock=clock, now=1, max_lag_s=30).reason == "lagging"
    unknown = judge(position(100, age=None), primary_known=True, clock=clock, now=1, max_lag_s=30)
    assert (unknown.reason, unknown.lag_s) == (read_replica.UNKNOWN, None)


@pytest.mark.parametrize(("received", "age", "lag"), [(100, 7200, 0.0), (180, 12, 12.0), (180, 90, 90.0)])
def test_when_the_primary_cannot_be_read_the_replica_s_own_view_decides(received, age, lag):
    # All it received is replayed: not behind (an idle primary); else the age of its last replayed commit.
    health = judge(position(100, received=received, age=age), primary_known=False, clock=clock_of(), now=5,
                   max_lag_s=30)
    assert health.lag_s == lag
    assert health.reason == (read_replica.LAGGING if lag > 30 else None)


def test_a_server_not_in_recovery_is_not_read():
    health = judge(position(None, age=None, in_recovery=False), primary_known=True, clock=clock_of((0, 1)), now=1,
                   max_lag_s=30)
    assert health.reason == read_replica.NOT_STANDBY


def test_the_clock_keeps_only_its_horizon():
    clock = LagClock(horizon_s=10)
    for at in range(0, 100):
        clock.record(float(at), at * 10)
    assert clock.lag_s(now=100, replayed_bytes=905) == 10  # sample 90 is still kept
    assert clock.lag_s(now=100, replayed_bytes=885) is None  # sample 88 is gone


def test_without_a_replica_url_there_is_no_replica_pool():
    settings = Settings(database_url="postgresql://nowhere/x")
    router = read_replica.ReadRouter(settings, primary=None)  # type: ignore[arg-type]  # never used without a replica
    assert not router.configured
    router.close()
