"""Jinja2's sandbox with a cost budget: a hostile template ends with Exceeded, not a hung thread or a full memory.

Jinja's sandbox keeps a template away from Python's internals but bounds neither time nor memory. Each render
gets a Budget (thread-local, so that one compiled template serves many threads), and the environment spends
it: every loop turn, call, filter and test is a step that looks at the clock; every string, list or dict the
template builds is charged by its size *as printed* (a list holding one list twice counts it twice, so that
aliasing cannot make a small structure print as gigabytes); and the operations that can build a large value
from small arguments (`'x' * n`, `n ** m`, `center(n)`, format widths, `replace`, `join`, `indent`,
`wordwrap`, `batch`, `slice`) are refused *before* they run when their result would be too large.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import compiler, nodes, utils

# How much a render may build on the way (strings and lists, however short-lived), as a multiple of its
# output limit: a receipt builds about its own size; 16 leaves room for `{% set %}` blocks and macros.
CREATED_FACTOR = 16
ITEM_BYTES = 8  # what a number, or one slot of a list, costs when printed (at least ", 0" and its pointer)
STEPS = "\0steps"  # no template can name this filter: the parser's names are identifiers
_CONTAINERS = (list, tuple, dict, set, frozenset)
COUNTED = (str, *_CONTAINERS)  # what charge() counts


class Exceeded(Exception):
    """A render went over one of its limits; the message says which, for the client."""


class Budget:
    """What one render may still spend: time, bytes built, and the sizes of what it built (by identity)."""

    __slots__ = ("created", "deadline", "max_created", "max_value", "sizes", "timeout_ms")

    def __init__(self, timeout_ms: int, max_output_bytes: int) -> None:
        self.deadline = time.monotonic() + timeout_ms / 1000
        self.timeout_ms = timeout_ms
        self.max_value = max_output_bytes
        self.max_created = CREATED_FACTOR * max_output_bytes
        self.created = 0
        self.sizes: dict[int, tuple[Any, int]] = {}  # id -> (the value, kept so that its id is not reused; size)

    def step(self) -> None:
        """One loop turn, call, filter or test: past the deadline, the render ends."""
        if time.monotonic() > self.deadline:
            raise Exceeded(f"rendering took longer than {self.timeout_ms} ms")

    def allow(self, size: int) -> None:
        """Refuse, before it is built, a value larger than the output may be."""
        if size > self.max_value:
            raise Exceeded(f"the template builds a value of {size} bytes, more than the {self.max_value} allowed")

    def charge(self, value: Any) -> Any:
        """Count `value` (just built) against what the render may build; give it back."""
        if isinstance(value, str):
            size = len(value)
        elif isinstance(value, _CONTAINERS):
            size = self.size(value)
        else:  # numbers, None, Undefined, generators: nothing to count
            return value
        if size > self.max_value:
            self.allow(size)
        self.created += size
        if self.created > self.max_created:
            raise Exceeded(f"the template builds more than {self.max_created} bytes of strings and lists")
        return value

    def size(self, value: Any) -> int:
        """How long `value` is when printed, about; containers are walked once each (memoised by identity)."""
        if isinstance(value, str):
            return len(value)
        if isinstance(value, _CONTAINERS):
            known = self.sizes.get(id(value))
            if known is not None:
                return known[1]
            self.step()
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            total = 2 + sum(ITEM_BYTES + self.size(item) for item in items)
            self.sizes[id(value)] = (value, total)
            return total
        if isinstance(value, utils.Namespace):  # mutable: walked each time (one holding itself: RecursionError)
            self.step()
            return 2 + sum(ITEM_BYTES + self.size(item) for item in value._Namespace__attrs.values())
        if isinstance(value, int) and not isinstance(value, bool):
            return ITEM_BYTES + value.bit_length() // 3
        return ITEM_BYTES


_local = threading.local()


def current() -> Budget:
    """The budget of the render running in this thread."""
    budget: Budget | None = getattr(_local, "budget", None)
    if budget is None:
        raise RuntimeError("a bounded template is rendered outside mailer.domain.templating.render")
    return budget


class Spending:
    """Context manager: a new budget is the current one in this thread while the block runs."""

    __slots__ = ("budget",)

    def __init__(self, timeout_ms: int, max_output_bytes: int) -> None:
        self.budget = Budget(timeout_ms, max_output_bytes)

    def __enter__(self) -> Budget:
        _local.budget = self.budget
        return self.budget

    def __exit__(self, *exc: object) -> None:
        _local.budget = None


def counted_steps(iterable: Iterable[Any]) -> Iterator[Any]:
    """The items of a for loop, one step each (an empty body or a false `if` still costs its turns)."""
    budget = current()
    for item in iterable:
        budget.step()
        yield item


class CountedBuffer(list[Any]):
    """The output buffer of a macro, call block, `{% set %}` block or filter block: what it holds is charged."""

    __slots__ = ("budget",)

    def __init__(self) -> None:
        super().__init__()
        self.budget = current()

    def append(self, item: Any) -> None:
        self.budget.charge(item)
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        for item in items:
            self.append(item)


class BoundedNamespace(utils.Namespace):
    """`namespace()`: what is stored in it is sized first, so that nesting namespaces cannot hide a huge value."""

    def __setitem__(self, name: str, value: Any) -> None:
        current().allow(current().size(value))
        super().__setitem__(name, value)


class BoundedCodeGenerator(compiler.CodeGenerator):
    """Jinja's compiler, with steps in loops and charges on buffers, `~` and literal lists and dicts."""

    def visit_For(self, node: nodes.For, frame: compiler.Frame) -> None:
        iterable = node.iter  # Jinja allows no new node types: a filter of a name no environment has marks it
        node.iter = nodes.Filter(iterable, STEPS, [], [], None, None, lineno=iterable.lineno)
        try:
            super().visit_For(node, frame)
        finally:
            node.iter = iterable

    def visit_Filter(self, node: nodes.Filter, frame: compiler.Frame) -> None:
        if node.name != STEPS:
            super().visit_Filter(node, frame)
            return
        self.write("environment.counted_steps(")
        self.visit(node.node, frame)  # type: ignore[arg-type]  # a filter node's value is set here, never None
        self.write(")")

    def buffer(self, frame: compiler.Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.counted_buffer()")

    def _charged(self, visit: Callable[[Any, compiler.Frame], None], node: Any, frame: compiler.Frame) -> None:
        self.write("environment.charge(")
        visit(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: compiler.Frame) -> None:
        self._charged(super().visit_Concat, node, frame)

    def visit_List(self, node: nodes.List, frame: compiler.Frame) -> None:
        self._charged(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: compiler.Frame) -> None:
        self._charged(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: compiler.Frame) -> None:
        if node.ctx == "load":  # not the target of `{% for a, b in ... %}` or `{% set a, b = ... %}`
            self._charged(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)
