"""How deeply a parsed JSON value nests, measured without recursion."""

from __future__ import annotations

from typing import Any

VARIABLE = "MAILER_MAX_JSON_DEPTH"


class TooDeep(ValueError):
    """A JSON value nests deeper than allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the JSON nests deeper than {limit} levels ({VARIABLE})")
        self.limit = limit


def check(raw: bytes, value: Any, limit: int) -> None:
    """Raise TooDeep when `value` (parsed from `raw`) has containers nested more than `limit` deep.

    A top-level object or array is level 1. When `raw` holds no more opening brackets than `limit`, no
    value can nest deeper and nothing is walked (a single message); otherwise the walk costs one step per
    container, less than the parser spent building them.
    """
    if raw.count(b"{") + raw.count(b"[") <= limit or not isinstance(value, dict | list):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise TooDeep(limit)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
