"""A recipient's status never moves backwards."""

from __future__ import annotations

import itertools

import pytest

from mailer.domain import statuses
from mailer.mailjet import events

RANK = statuses.RECIPIENT_STATUS_RANK


@pytest.mark.parametrize(
    ("current", "candidate"),
    [("pending", "sent"), ("sent", "delivered"), ("sent", "deferred"), ("deferred", "delivered"),
     ("delivered", "opened"), ("opened", "clicked"), ("clicked", "unsubscribed"), ("unsubscribed", "spam"),
     ("delivered", "bounced"), ("pending", "failed"), ("pending", "suppressed"), ("pending", "opened")],
)
def test_moves_forward(current, candidate):
    assert statuses.advances(current, candidate)


@pytest.mark.parametrize(
    ("current", "candidate"),
    [("sent", "pending"), ("opened", "delivered"), ("opened", "sent"), ("opened", "bounced"), ("clicked", "opened"),
     ("delivered", "deferred"), ("failed", "sent"), ("spam", "clicked")],
)
def test_never_moves_back(current, candidate):
    assert not statuses.advances(current, candidate)


@pytest.mark.parametrize("status", sorted(RANK))
def test_a_status_does_not_advance_to_itself(status):
    assert not statuses.advances(status, status)


@pytest.mark.parametrize(("a", "b"), [("bounced", "blocked"), ("failed", "suppressed")])
def test_equal_ranks_do_not_replace_each_other(a, b):
    assert not statuses.advances(a, b)
    assert not statuses.advances(b, a)


def test_advances_is_exactly_the_rank_order():
    for current, candidate in itertools.product(RANK, repeat=2):
        assert statuses.advances(current, candidate) == (RANK[candidate] > RANK[current])


def test_pending_is_the_only_lowest_status():
    assert [status for status, rank in RANK.items() if rank == min(RANK.values())] == ["pending"]


def test_an_unknown_status_is_an_error():
    with pytest.raises(KeyError):
        statuses.advances("pending", "teleported")


def test_every_mailjet_event_maps_to_a_known_status():
    assert set(events.EVENT_STATUS.values()) | {events.SOFT_BOUNCE_STATUS} <= set(RANK)


def test_events_in_any_order_end_at_the_same_status():
    seen = ["delivered", "opened", "bounced", "deferred", "clicked"]
    ends = set()
    for order in itertools.permutations(seen):
        status = "sent"
        for candidate in order:
            if statuses.advances(status, candidate):
                status = candidate
        ends.add(status)
    assert ends == {"clicked"}
