"""The daily charts' geometry: bars for /stats days, drawn as inline SVG by the templates."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

SERIES = ("created", "sent", "failed")
ENGAGEMENT_SERIES = ("delivered", "opened", "clicked", "bounced")
BAR_W = 9
GAP = 1
DAY_GAP = 10
PLOT_H = 140
TOP = 16  # room for the scale's label
LABEL_H = 18


@dataclasses.dataclass(frozen=True)
class Bar:
    kind: str
    x: int
    y: float
    height: float
    title: str


@dataclasses.dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_bottom: int
    peak: int
    bars: list[Bar]
    labels: list[tuple[int, str]]  # (x of the day's middle, "MM-DD")


def daily_bars(days: Sequence[dict[str, Any]]) -> Chart:
    """One group of bars (created, sent, failed) per day, scaled to the busiest value."""
    return bars_of(days, SERIES)


def engagement_bars(days: Sequence[dict[str, Any]]) -> Chart:
    """One group of bars (recipients delivered, opened, clicked, bounced) per day, scaled to the busiest value."""
    return bars_of(days, ENGAGEMENT_SERIES)


def bars_of(days: Sequence[dict[str, Any]], series: Sequence[str]) -> Chart:
    """One group of bars per day, a bar per kind of `series`, scaled to the busiest value."""
    peak = max((day[kind] for day in days for kind in series), default=0)
    scale = PLOT_H / peak if peak else 0.0
    group = len(series) * (BAR_W + GAP) + DAY_GAP
    bars, labels = [], []
    bottom = TOP + PLOT_H
    for index, day in enumerate(days):
        left = index * group + DAY_GAP // 2
        for offset, kind in enumerate(series):
            height = round(day[kind] * scale, 1)
            bars.append(Bar(
                kind=kind, x=left + offset * (BAR_W + GAP), y=round(bottom - height, 1), height=height,
                title=f"{day['date']}: {day[kind]} {kind}",
            ))
        labels.append((left + (len(series) * (BAR_W + GAP)) // 2, str(day["date"])[5:]))
    return Chart(width=max(group * len(days), 1), height=bottom + LABEL_H, plot_bottom=bottom, peak=peak,
                 bars=bars, labels=labels)
