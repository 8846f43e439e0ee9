"""The dashboard's daily chart: one group of bars per day, scaled to the busiest value."""

from __future__ import annotations

from mailer.dashboard import chart


def day(date: str, created: int, sent: int, failed: int) -> dict:
    return {"date": date, "created": created, "sent": sent, "failed": failed, "suppressed": 0, "cancelled": 0}


def test_bars_are_scaled_to_the_busiest_value_and_stand_on_one_baseline():
    drawn = chart.daily_bars([day("2026-11-01", 10, 5, 0), day("2026-11-02", 20, 18, 2)])
    assert drawn.peak == 20
    assert len(drawn.bars) == 6
    heights = {(bar.title): bar.height for bar in drawn.bars}
    assert heights["2026-11-02: 20 created"] == chart.PLOT_H
    assert heights["2026-11-01: 5 sent"] == chart.PLOT_H / 4
    assert heights["2026-11-01: 0 failed"] == 0
    assert all(bar.y + bar.height == drawn.plot_bottom for bar in drawn.bars)
    assert [label for _, label in drawn.labels] == ["11-01", "11-02"]
    xs = [bar.x for bar in drawn.bars]
    assert xs == sorted(xs) and max(xs) < drawn.width


def test_no_traffic_draws_flat_bars():
    drawn = chart.daily_bars([day("2026-11-01", 0, 0, 0)] * 14)
    assert drawn.peak == 0
    assert all(bar.height == 0 for bar in drawn.bars)
