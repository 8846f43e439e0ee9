"""The environment templates render in: Jinja2's immutable sandbox, spending a template_budget.Budget."""

from __future__ import annotations

import builtins
import functools
import re
import string
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any

from jinja2 import StrictUndefined, runtime, sandbox
from jinja2.exceptions import FilterArgumentError
from markupsafe import soft_str

from mailer.domain import template_budget as budgets
from mailer.domain.template_budget import Budget, Exceeded

# The largest integer a template may compute: Python refuses to print more than 4300 digits anyway
# (sys.int_info.default_max_str_digits), and multiplying such numbers is where their cost grows.
MAX_INT_BITS = 14_000
MAX_ITEMS = sandbox.MAX_RANGE  # counts for batch() and slice(): the most items Jinja's own range() makes
MAX_JSON_INDENT = 8
# wordwrap and title loop in Python over words, out of the budget's reach (wordwrap: 0.3 ms a KB); sort,
# unique, groupby and dictsort call a Python key per item (sort: 1.4 ms per 1000). These bound one such call
# to about 20 ms; a variable may otherwise be as large as the request.
MAX_SLOW_TEXT = 64 * 1024
MAX_SORTED = 10_000
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
NUMBERS = frozenset({int, float, bool})
NUMBER_ATTRIBUTES = frozenset({"real", "imag", "is_integer", "bit_length", "numerator", "denominator"})
# random: a preview must show what is sent; pprint: a debugging aid whose output grows with nesting depth;
# urlize: its target/rel strings are repeated per link found, a product nothing here bounds cheaply.
DROPPED_FILTERS = frozenset({"random", "pprint", "urlize"})


def _replaced_size(s: str, old: str, new: str, count: Any) -> int:
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


def _int_result(value: Any) -> Any:
    if type(value) is int and value.bit_length() > MAX_INT_BITS:
        raise Exceeded(f"a number larger than {MAX_INT_BITS} bits")
    return value


def _results(budget: Budget, result: Any) -> Any:
    """A filter's result, counted: a generator (select, map, batch...) steps per item as it is drawn."""
    if isinstance(result, Iterator) and not isinstance(result, budgets.COUNTED):
        return budgets.counted_steps(result)
    return _int_result(budget.charge(result))


def _stepped_test(func: Any) -> Any:
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
        budget.allow(_replaced_size(str(s), str(old), str(new), count))

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


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
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


def _check_str_method(budget: Budget, s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                      ) -> tuple[Any, ...]:
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        budget.allow(width if isinstance(width, int) else 0)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        budget.allow(len(s) + s.count("\t") * (size if isinstance(size, int) else 0))
    elif name == "replace" and len(args) >= 2:
        budget.allow(_replaced_size(s, str(args[0]), str(args[1]), args[2] if len(args) > 2 else kwargs.get("count")))
    elif name == "join" and args:
        items = list(budgets.counted_steps(args[0]))
        budget.allow(sum(budget.size(item) for item in items) + len(s) * max(len(items) - 1, 0))
        return (items, *args[1:])
    return args


class BoundedEnvironment(sandbox.ImmutableSandboxedEnvironment):
    """Immutable sandbox, StrictUndefined, no loader, every cost counted (template_budget)."""

    code_generator_class = budgets.BoundedCodeGenerator
    # All of them: `//` and `%` of two huge integers are quadratic too, so every operand is bounded.
    intercepted_binops = frozenset({"*", "**", "+", "-", "/", "//", "%"})
    counted_steps = staticmethod(budgets.counted_steps)
    counted_buffer = staticmethod(budgets.CountedBuffer)

    def __init__(self, autoescape: bool) -> None:
        # optimized=False: Jinja's optimizer folds constants by trying every subexpression of every expression,
        # quadratic in a chain of `or` (320 operands: seconds to check); a render barely gains from it.
        super().__init__(autoescape=autoescape, undefined=StrictUndefined, keep_trailing_newline=True,
                         auto_reload=False, cache_size=0, optimized=False)
        self.globals.pop("lipsum", None)  # random text: of no use in an email, and a preview must equal the send
        self.globals["namespace"] = budgets.BoundedNamespace
        self.filters = {
            name: _bounded_filter(name, func) for name, func in self.filters.items() if name not in DROPPED_FILTERS
        }
        self.tests = {name: _stepped_test(func) for name, func in self.tests.items()}

    @staticmethod
    def charge(value: Any) -> Any:
        """Count a string, list or dict the template just built (`~`, literals)."""
        return budgets.current().charge(value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`a.b`: for a dict (JSON variables), its key b first (Jinja tries the attribute first, and raising then
        catching AttributeError made half the cost of a receipt); anything else as Jinja does."""
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """`a['b']`, and the attribute= of sort, groupby, map, selectattr, sum...: one step each, so that a
        filter walking a long list by attribute stops at the deadline."""
        budgets.current().step()
        return super().getitem(obj, argument)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in STR_METHODS
        if isinstance(obj, int | float):
            return attr in NUMBER_ATTRIBUTES
        return True

    def call(self, context: runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """A call from a template (macro, method, global): one step; its result charged."""
        budget = budgets.current()
        budget.step()
        if isinstance(obj, runtime.LoopContext) and args:  # `loop(children)` in a recursive for loop
            args = (budgets.counted_steps(args[0]), *args[1:])
        elif isinstance(obj, types.BuiltinMethodType | types.MethodType) and isinstance(obj.__self__, str):
            args = _check_str_method(budget, obj.__self__, obj.__name__, args, kwargs)
        return budget.charge(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: runtime.Context, operator: str, left: Any, right: Any) -> Any:
        """Every operator, refused before it builds something too large or works on too large a number."""
        if type(left) in NUMBERS and type(right) in NUMBERS:  # the common case, kept short: prices and counts
            if type(left) is int and type(right) is int and (
                left.bit_length() > MAX_INT_BITS or right.bit_length() > MAX_INT_BITS
                or (operator == "*" and left.bit_length() + right.bit_length() > MAX_INT_BITS)
                or (operator == "**" and right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS)
            ):
                raise Exceeded(f"a number larger than {MAX_INT_BITS} bits")
            return self.binop_table[operator](left, right)
        budget = budgets.current()
        if operator == "*":
            if isinstance(right, int) and isinstance(left, str | list | tuple):
                budget.allow(budget.size(left) * max(right, 0))
            elif isinstance(left, int) and isinstance(right, str | list | tuple):
                budget.allow(budget.size(right) * max(left, 0))
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                budget.allow(budget.size(left) + budget.size(right))
        elif operator == "%" and isinstance(left, str):
            check_percent(budget, left, right)
        return budget.charge(self.binop_table[operator](left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format and format_map, their widths and fields checked first."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            budget = budgets.current()
            if is_map and len(args) == 1 and isinstance(args[0], Mapping):
                check_braces(budget, fmt, (), args[0])
            else:
                check_braces(budget, fmt, args, kwargs)
            result: str = budget.charge(wrapper(*args, **kwargs))
            return result

        return checked

    def call_filter(self, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        budgets.current().step()  # map(), select() and the like call filters and tests once per item
        return super().call_filter(name, value, *args, **kwargs)

    def call_test(self, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        budgets.current().step()
        return super().call_test(name, value, *args, **kwargs)
