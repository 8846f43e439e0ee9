"""What a template's strings and numbers would grow to, checked before they are built: formats, str methods, ints."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from typing import Any

from mailer.domain import template_budget as budgets
from mailer.domain.template_budget import Budget, Exceeded

# The largest integer a template may compute: Python refuses to print more than 4300 digits anyway
# (sys.int_info.default_max_str_digits), and multiplying such numbers is where their cost grows.
MAX_INT_BITS = 14_000
# In a format: a '*' width, a number of 4 digits or more, or a field inside a field ('{:{w}}'). A format
# without any is bounded at a glance (fields times the largest value, widths below 1000); one with is parsed.
UNUSUAL_FORMAT = re.compile(r"\*|\d{4}|\{[^{}]*\{")
PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
# str methods a template may call: the others are of no use in an email (encode, translate) or are costly
# to bound; those that build a large string from small arguments are checked in BoundedEnvironment.call.
STR_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "format", "format_map", "index",
    "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable",
    "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "partition", "removeprefix", "removesuffix",
    "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith",
    "strip", "swapcase", "title", "upper", "zfill", "escape", "unescape", "striptags",
})


def replaced_size(s: str, old: str, new: str, count: Any) -> int:
    """The length `s.replace(old, new, count)` would have, known before it is built."""
    found = len(s) + 1 if old == "" else s.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(s) + found * max(len(new) - len(old), 0)


def _largest(budget: Budget, values: Iterable[Any]) -> int:
    largest = 0
    for item in values:
        if isinstance(item, budgets.COUNTED):
            largest = max(largest, budget.size(item))
    return largest


def check_percent(budget: Budget, fmt: str, values: Any) -> None:
    """Refuse `fmt % values` when its widths, or its fields times the largest value, exceed the output limit."""
    items = values.values() if isinstance(values, Mapping) else values if isinstance(values, tuple) else (values,)
    largest = _largest(budget, items)
    if UNUSUAL_FORMAT.search(fmt) is None:  # "%.2f", "%s x %s": every width and precision is below 1000
        budget.allow(len(fmt) + fmt.count("%") * (largest + 2 * 999))
        return
    fields = widths = 0
    for width, precision in PERCENT_SPEC.findall(fmt):
        budget.step()
        if "*" in (width, precision):
            raise Exceeded("'*' widths in % formatting are not allowed")
        fields += 1
        widths += int(width or 0) + int(precision or 0)
    budget.allow(len(fmt) + widths + fields * largest)


def check_braces(budget: Budget, fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """The same for str.format and format_map."""
    largest = _largest(budget, (*args, *kwargs.values()))
    if UNUSUAL_FORMAT.search(fmt) is None:
        budget.allow(len(fmt) + fmt.count("{") * (largest + 2 * 999))
        return
    fields = widths = 0
    for _text, field, spec, _conversion in string.Formatter().parse(fmt):
        budget.step()
        if field is None:
            continue
        if spec and "{" in spec:
            raise Exceeded("a format width taken from an argument ('{:{w}}') is not allowed")
        fields += 1
        widths += sum(int(number) for number in re.findall(r"\d+", spec or ""))
    budget.allow(len(fmt) + widths + fields * largest)


def check_str_method(budget: Budget, s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                      ) -> tuple[Any, ...]:
    """Refuse a str method call that would build too large a string; the arguments to call it with."""
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        budget.allow(width if isinstance(width, int) else 0)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        budget.allow(len(s) + s.count("\t") * (size if isinstance(size, int) else 0))
    elif name == "replace" and len(args) >= 2:
        budget.allow(replaced_size(s, str(args[0]), str(args[1]), args[2] if len(args) > 2 else kwargs.get("count")))
    elif name == "join" and args:
        items = list(budgets.counted_steps(args[0]))
        budget.allow(sum(budget.size(item) for item in items) + len(s) * max(len(items) - 1, 0))
        return (items, *args[1:])
    return args


def int_result(value: Any) -> Any:
    """`value`, refused when it is an integer of more than MAX_INT_BITS bits."""
    if type(value) is int and value.bit_length() > MAX_INT_BITS:
        raise Exceeded(f"a number larger than {MAX_INT_BITS} bits")
    return value
