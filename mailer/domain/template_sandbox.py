"""The environment templates render in: Jinja2's immutable sandbox, spending a template_budget.Budget."""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, runtime, sandbox

from mailer.domain import template_budget as budgets
from mailer.domain.template_budget import Exceeded
from mailer.domain.template_filters import DROPPED_FILTERS, bounded_filter, stepped_test
from mailer.domain.template_size_checks import MAX_INT_BITS, STR_METHODS, check_braces, check_percent, check_str_method

NUMBERS = frozenset({int, float, bool})
NUMBER_ATTRIBUTES = frozenset({"real", "imag", "is_integer", "bit_length", "numerator", "denominator"})


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
            name: bounded_filter(name, func) for name, func in self.filters.items() if name not in DROPPED_FILTERS
        }
        self.tests = {name: stepped_test(func) for name, func in self.tests.items()}

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
            args = check_str_method(budget, obj.__self__, obj.__name__, args, kwargs)
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
