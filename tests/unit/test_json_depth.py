"""json_depth.check: exact at the limit, walks no recursion, skips bodies too small to nest deep."""

from __future__ import annotations

import json

import pytest

from mailer.domain import json_depth


def check(text: str, limit: int) -> None:
    json_depth.check(text.encode(), json.loads(text), limit)


@pytest.mark.parametrize(
    ("text", "depth"),
    [("1", 0), ('"[[[["', 0), ("[]", 1), ("{}", 1), ("[[]]", 2), ('{"a": [{"b": [1]}]}', 4), ("[[], [[[]]], []]", 4),
     ('[{"x": "[[[[[[[[[[["}]', 2), ('{"a":' * 50 + "1" + "}" * 50, 50), ("[" * 900 + "]" * 900, 900)],
)
def test_a_value_passes_at_its_depth_and_fails_one_below(text, depth):
    check(text, max(depth, 1))
    if depth > 1:
        with pytest.raises(json_depth.TooDeep, match=f"deeper than {depth - 1} levels"):
            check(text, depth - 1)


def test_the_message_names_the_variable():
    with pytest.raises(json_depth.TooDeep, match="MAILER_MAX_JSON_DEPTH"):
        check("[[[]]]", 2)
