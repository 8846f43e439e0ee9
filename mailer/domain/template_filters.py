"""Jinja's filters and tests, bounded: a step per call, each result charged, the costly ones checked first."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

from jinja2 import sandbox
from jinja2.exceptions import FilterArgumentError
from markupsafe import soft_str

from mailer.domain import template_budget as budgets
from mailer.domain.template_budget import Budget, Exceeded
from mailer.domain.template_size_checks import check_percent, int_result, replaced_size

MAX_ITEMS = sandbox.MAX_RANGE  # counts for batch() and slice(): the most items Jinja's own range() makes
MAX_JSON_INDENT = 8
# wordwrap and title loop in Python over words, out of the budget's reach (wordwrap: 0.3 ms a KB); sort,
# unique, groupby and dictsort call a Python key per item (sort: 1.4 ms per 1000). These bound one such call
# to about 20 ms; a variable may otherwise be as large as the request.
MAX_SLOW_TEXT = 64 * 1024
MAX_SORTED = 10_000
# random: a preview must show what is sent; pprint: a debugging aid whose output grows with nesting depth;
# urlize: its target/rel strings are repeated per link found, a product nothing here bounds cheaply.
DROPPED_FILTERS = frozenset({"random", "pprint", "urlize"})


def _slow_text(name: str, text: str) -> None:
    if len(text) > MAX_SLOW_TEXT:
        raise Exceeded(f"{name}() of more than {MAX_SLOW_TEXT} characters")


def _sorted(name: str, value: Any) -> list[Any] | None:
    """Refuse more than MAX_SORTED items; a generator is drawn (one step an item) only as far as that."""
    if isinstance(value, Sized):
        if len(value) > MAX_SORTED:
            raise Exceeded(f"{name}() of more than {MAX_SORTED} items")
        return None
    items: list[Any] = []
    for item in budgets.counted_steps(value):
        if len(items) == MAX_SORTED:
            raise Exceeded(f"{name}() of more than {MAX_SORTED} items")
        items.append(item)
    return items


def _results(budget: Budget, result: Any) -> Any:
    """A filter's result, counted: a generator (select, map, batch...) steps per item as it is drawn."""
    if isinstance(result, Iterator) and not isinstance(result, budgets.COUNTED):
        return budgets.counted_steps(result)
    return int_result(budget.charge(result))


def stepped_test(func: Any) -> Any:
    """A Jinja test that takes one step of the budget per call."""
    @functools.wraps(func)  # `x is t` is called directly, not through call_test: `x is in long_list` x500
    def stepped(*args: Any, **kwargs: Any) -> Any:
        budgets.current().step()
        return func(*args, **kwargs)

    return stepped


def _charged_items(budget: Budget, chunks: Iterable[Any]) -> Iterator[Any]:
    """batch()'s chunks, each a new list: charged as they are made, so that nesting batches fills no memory."""
    for chunk in chunks:
        budget.step()
        yield budget.charge(chunk)


class _Before:
    """Checks run before a filter, with its signature (less its context argument); a result replaces `value`."""

    @staticmethod
    def center(budget: Budget, value: Any, width: int = 80) -> None:
        budget.allow(width if isinstance(width, int) else 0)

    @staticmethod
    def indent(budget: Budget, s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> None:
        text = str(s)
        budget.allow(len(text) + (text.count("\n") + 1) * (width if isinstance(width, int) else len(str(width))))

    @staticmethod
    def wordwrap(budget: Budget, s: Any, width: int = 79, break_long_words: bool = True,
                 wrapstring: str | None = None, break_on_hyphens: bool = True) -> None:
        text = str(s)
        _slow_text("wordwrap", text)
        lines = len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
        budget.allow(len(text) + lines * len(str(wrapstring or "\n")))

    @staticmethod
    def join(budget: Budget, value: Any, d: str = "", attribute: Any = None) -> list[Any]:
        items = list(budgets.counted_steps(value))
        budget.allow(sum(budget.size(item) for item in items) + len(str(d)) * max(len(items) - 1, 0))
        return items

    @staticmethod
    def replace(budget: Budget, s: Any, old: Any, new: Any, count: Any = None) -> None:
        budget.allow(replaced_size(str(s), str(old), str(new), count))

    @staticmethod
    def batch(budget: Budget, value: Any, linecount: Any, fill_with: Any = None) -> None:
        if isinstance(linecount, int) and linecount > MAX_ITEMS:
            raise Exceeded(f"batch() of more than {MAX_ITEMS} items")

    @staticmethod
    def slice(budget: Budget, value: Any, slices: Any, fill_with: Any = None) -> None:
        if isinstance(slices, int) and slices > MAX_ITEMS:
            raise Exceeded(f"slice() into more than {MAX_ITEMS} parts")

    @staticmethod
    def title(budget: Budget, s: Any) -> None:
        _slow_text("title", str(s))

    @staticmethod
    def dictsort(budget: Budget, value: Any, *args: Any, **kwargs: Any) -> None:
        _sorted("dictsort", value)

    @staticmethod
    def sort(budget: Budget, value: Any, *args: Any, **kwargs: Any) -> list[Any] | None:
        return _sorted("sort", value)

    @staticmethod
    def unique(budget: Budget, value: Any, *args: Any, **kwargs: Any) -> list[Any] | None:
        return _sorted("unique", value)

    @staticmethod
    def groupby(budget: Budget, value: Any, *args: Any, **kwargs: Any) -> list[Any] | None:
        return _sorted("groupby", value)

    @staticmethod
    def sum(budget: Budget, iterable: Any, attribute: Any = None, start: Any = 0) -> None:
        if not isinstance(start, int | float):  # adding lists or strings one by one is quadratic
            raise Exceeded("sum() adds numbers only")

    @staticmethod
    def tojson(budget: Budget, value: Any, indent: Any = None) -> None:
        if isinstance(indent, int) and indent > MAX_JSON_INDENT:
            raise Exceeded(f"tojson() indents by {MAX_JSON_INDENT} at most")
        budget.allow(budget.size(value))  # walked step by step: a variable may be as large as the request

    @staticmethod
    def list(budget: Budget, value: Any) -> builtins.list[Any]:
        items: builtins.list[Any] = []
        size = 2
        for item in budgets.counted_steps(value):  # a generator's items sized as they come: refused on the way
            size += budgets.ITEM_BYTES + budget.size(item)
            budget.allow(size)
            items.append(item)
        return items


def do_format(value: Any, *args: Any, **kwargs: Any) -> str:
    """Jinja's `format` filter (`"%.2f"|format(x)`), checked in one call: a receipt uses it on every line."""
    if args and kwargs:
        raise FilterArgumentError("can't handle positional and keyword arguments at the same time")
    fmt = soft_str(value)
    budget = budgets.current()
    budget.step()
    check_percent(budget, fmt, kwargs or args)
    result: str = budget.charge(fmt % (kwargs or args))
    return result


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's filter `name`, bounded: a step per call, checked first when costly, its result charged."""
    if name == "format":
        return do_format
    before: Callable[..., Any] | None = getattr(_Before, name, None)
    if before is None:

        @functools.wraps(func)  # keeps jinja_pass_arg: Jinja still passes the context, eval context or environment
        def charged(*args: Any, **kwargs: Any) -> Any:
            budget = budgets.current()
            budget.step()  # `{{ x|f }}` is called directly, not through call_filter
            return _results(budget, func(*args, **kwargs))

        return charged
    check = before
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        budget = budgets.current()
        budget.step()
        value = check(budget, *args[skip:], **kwargs)
        if value is not None:
            args = (*args[:skip], value, *args[skip + 1:])
        result = func(*args, **kwargs)
        if name == "batch":
            return _charged_items(budget, result)
        return _results(budget, result)

    return checked
