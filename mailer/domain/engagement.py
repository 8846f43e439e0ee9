"""Engagement stats: the recipient counters of a day or a range and their rates over delivered."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

JOB_KINDS = ("created", "sent", "failed", "suppressed", "cancelled")
# Recipients per milestone (migrations 0042, 0045: mailer_milestone_kinds): delivered first, the base of the rates.
RECIPIENT_KINDS = ("delivered", "opened", "clicked", "bounced", "blocked", "spam", "unsubscribed")
RATE_KINDS = RECIPIENT_KINDS[1:]
RATE_DIGITS = 4


def rates(counts: Mapping[str, int]) -> dict[str, float | None]:
    """Each kind over delivered, rounded; None when nothing was delivered (a day may exceed 1: see README)."""
    delivered = counts.get("delivered", 0)
    return {kind: round(counts.get(kind, 0) / delivered, RATE_DIGITS) if delivered else None for kind in RATE_KINDS}


def day_entry(date: str, counts: Mapping[str, int]) -> dict[str, object]:
    """One day of /stats: the job kinds, the recipient kinds (zeros too) and the rates."""
    entry: dict[str, object] = {"date": date}
    entry.update({kind: counts.get(kind, 0) for kind in (*JOB_KINDS, *RECIPIENT_KINDS)})
    entry["rates"] = rates(counts)
    return entry


def totals(days: Iterable[Mapping[str, object]]) -> dict[str, object]:
    """Every kind summed over the days, with the rates of the sums."""
    summed = dict.fromkeys((*JOB_KINDS, *RECIPIENT_KINDS), 0)
    for day in days:
        for kind in summed:
            value = day.get(kind, 0)
            summed[kind] += value if isinstance(value, int) else 0
    return {**summed, "rates": rates(summed)}
