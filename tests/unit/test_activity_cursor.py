"""The activity feed's cursor and type filter (mailer/domain/activity.py)."""

from __future__ import annotations

import base64

import pytest

from mailer.domain import activity


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("position", [(0, 0), (1, 2), (2**64 - 1, 2**63 - 1), (745_211, 88)])
def test_a_cursor_stands_for_its_position(position):
    cursor = activity.encode_cursor(*position)
    assert cursor.isascii() and "=" not in cursor and str(position[0]) not in cursor
    assert activity.decode_cursor(cursor) == position


@pytest.mark.parametrize("cursor", [
    "", "!!", "a" * 65, _raw("a1.1"), _raw("a1.1.2.3"), _raw("a2.1.2"), _raw("a1.-1.2"), _raw("a1.1.x"),
    _raw(f"a1.{2**64}.1"), _raw(f"a1.1.{2**63}"), _raw("a1. 1.2"), _raw("a1.1.2") + "=", "\u00e9",
])
def test_anything_else_is_not_a_cursor(cursor):
    with pytest.raises(ValueError, match="not a cursor"):
        activity.decode_cursor(cursor)


def test_types_take_both_spellings_once_each_and_name_an_unknown_one():
    assert activity.parse_types("email.delivered, bounced,delivered") == ["delivered", "bounced"]
    for bad in ("pending", "email.", "", "delivered,,opened", "email.sending"):
        with pytest.raises(ValueError, match="unknown type"):
            activity.parse_types(bad)
