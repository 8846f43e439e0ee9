"""Taking suppressed recipients out of a message, and finding their queued positions again."""

from __future__ import annotations

from mailer.services.suppressions import without


def msg(to: list[str], cc: list[str] | None = None, bcc: list[str] | None = None) -> dict:
    return {"from": {"email": "billing@example.com"}, "subject": "s", "text": "t",
            "to": [{"email": a} for a in to], "cc": [{"email": a} for a in cc or []],
            "bcc": [{"email": a} for a in bcc or []]}


def emails(message: dict, kind: str) -> list[str]:
    return [address["email"] for address in message[kind]]


def test_positions_as_sent_map_back_to_positions_as_queued() -> None:
    screening = without(msg(["a", "b", "c"], cc=["d", "e"]), {("to", 0), ("to", 2), ("cc", 0)})

    assert (emails(screening.message, "to"), emails(screening.message, "cc")) == (["b"], ["e"])
    assert screening.original("to", 0) == ("to", 1)
    assert screening.original("cc", 0) == ("cc", 1)
    assert screening.skipped == (("cc", 0), ("to", 0), ("to", 2))
    assert not screening.nothing_left
    assert screening.problem is None


def test_the_rest_of_the_message_is_kept_and_the_original_is_not_changed() -> None:
    original = msg(["a", "b"])
    screening = without(original, {("to", 0)})
    assert {k: v for k, v in screening.message.items() if k not in ("to", "cc", "bcc")} == {
        "from": {"email": "billing@example.com"}, "subject": "s", "text": "t"}
    assert emails(original, "to") == ["a", "b"]


def test_cc_moves_up_when_no_to_is_left() -> None:
    screening = without(msg(["a"], cc=["c1", "c2"], bcc=["b1", "b2"]), {("to", 0)})
    assert emails(screening.message, "to") == ["c1", "c2"]
    assert screening.message["cc"] == []
    assert emails(screening.message, "bcc") == ["b1", "b2"]
    assert [screening.original("to", i) for i in (0, 1)] == [("cc", 0), ("cc", 1)]
    assert screening.original("bcc", 1) == ("bcc", 1)


def test_a_lone_bcc_moves_up_but_several_are_a_problem() -> None:
    lone = without(msg(["a"], bcc=["b1"]), {("to", 0)})
    assert (emails(lone.message, "to"), lone.message["bcc"], lone.original("to", 0)) == (["b1"], [], ("bcc", 0))
    several = without(msg(["a"], bcc=["b1", "b2"]), {("to", 0)})
    assert several.problem is not None
    assert not several.nothing_left


def test_nothing_left_when_every_recipient_is_suppressed() -> None:
    screening = without(msg(["a"], cc=["c"]), {("to", 0), ("cc", 0)})
    assert screening.nothing_left
    assert screening.problem is None
