"""The rates of GET /stats: count over delivered, rounded, null without deliveries, above 1 when they are."""

from __future__ import annotations

from mailer.domain import engagement


def test_rates_are_over_delivered_rounded_to_four_decimals() -> None:
    assert engagement.rates({"delivered": 3, "opened": 2, "clicked": 1}) == {
        "opened": 0.6667, "clicked": 0.3333, "bounced": 0.0, "blocked": 0.0, "spam": 0.0, "unsubscribed": 0.0}


def test_no_delivery_means_null_rates_not_a_division_error() -> None:
    assert engagement.rates({"opened": 5, "bounced": 2}) == dict.fromkeys(engagement.RATE_KINDS)


def test_a_day_of_late_opens_may_exceed_one() -> None:
    assert engagement.rates({"delivered": 2, "opened": 7})["opened"] == 3.5


def test_totals_sum_every_kind_and_rate_the_sums() -> None:
    days = [engagement.day_entry("2026-11-22", {"created": 2, "delivered": 4, "opened": 1}),
            engagement.day_entry("2026-11-23", {"opened": 3})]
    assert days[1]["rates"] == dict.fromkeys(engagement.RATE_KINDS)
    totals = engagement.totals(days)
    assert (totals["created"], totals["delivered"], totals["opened"], totals["spam"]) == (2, 4, 4, 0)
    assert totals["rates"]["opened"] == 1.0  # type: ignore[index]
