"""Stored templates: parse once (check), render many times (render), in Jinja2's sandbox with bounded cost."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Protocol, cast

import jinja2
from jinja2 import meta, nodes

from mailer.domain import message as message_rules
from mailer.domain import template_budget, template_sandbox, template_schema
from mailer.domain.errors import ValidationFailed

PARTS = ("subject", "html", "text")
# Compiling costs ~50 µs per Jinja node (an expression, a statement, a run of text): a part may have one per
# 32 bytes of MAILER_TEMPLATE_MAX_BYTES (4,096 by default, ~200 ms to check; a receipt has 60), so that storing
# a template of 128 KB of `{{ a ~ a ~ ... }}` does not hold a web thread for seconds.
BYTES_PER_NODE = 32
MAX_SUBJECT = 998  # a header line (RFC 5322 2.1.1), as a message's own subject (api/schemas.py)
# Expressions inside expressions (`a or b or ...` nests one per operand): Jinja's compiler recurses through
# them, once per level for some nodes; an email's deepest are a few levels, and 64 keeps checking linear.
MAX_NESTING = 64


@dataclasses.dataclass(frozen=True)
class Source:
    """One template version as the app gave it."""

    subject: str | None
    html: str | None
    text: str | None
    variables: Mapping[str, Any] | None  # a JSON Schema (draft 2020-12 unless it says) of the variables


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one template may cost (Limits.from_settings(settings))."""

    max_source_bytes: int  # per part (subject/html/text) and for the schema
    render_timeout_ms: int  # per message rendered
    max_output_bytes: int  # html + text + subject of one rendered message

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> Limits:
        """The limits of MAILER_TEMPLATE_MAX_BYTES, _RENDER_TIMEOUT_MS and _MAX_OUTPUT_BYTES (mailer.config)."""
        return cls(
            max_source_bytes=settings.template_max_bytes,
            render_timeout_ms=settings.template_render_timeout_ms,
            max_output_bytes=settings.template_max_output_bytes,
        )


class LimitSettings(Protocol):
    """What Limits reads of mailer.config.Settings (the layers keep domain and config apart)."""

    @property
    def template_max_bytes(self) -> int: ...
    @property
    def template_render_timeout_ms(self) -> int: ...
    @property
    def template_max_output_bytes(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One message's content, rendered."""

    subject: str | None
    html: str | None
    text: str | None


# Two environments: autoescape is per part (html escapes, text and subject do not).
_ESCAPED = template_sandbox.BoundedEnvironment(autoescape=True)
_PLAIN = template_sandbox.BoundedEnvironment(autoescape=False)
_NO_LOADER = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")


class Compiled:
    """A checked template version: parsed once, reusable by many threads at once (nothing in it changes)."""

    __slots__ = ("_parts", "_required", "_schema")

    def __init__(
        self,
        parts: dict[str, jinja2.Template],
        required: tuple[str, ...],
        schema: template_schema.VariablesSchema | None,
    ) -> None:
        self._parts = parts
        self._required = required
        self._schema = schema


def check(source: Source, limits: Limits) -> Compiled:
    """Parse every part and the schema; ValidationFailed naming each field (and line) that is wrong."""
    errors: dict[str, list[str]] = {}
    parts: dict[str, jinja2.Template] = {}
    undeclared: set[str] = set()
    for name in PARTS:
        text = getattr(source, name)
        if text is None:
            continue
        if not isinstance(text, str):
            errors[name] = ["must be a string"]
            continue
        env = _ESCAPED if name == "html" else _PLAIN
        try:
            if len(text.encode()) > limits.max_source_bytes:  # a lone surrogate cannot be encoded: caught below
                errors[name] = [f"longer than {limits.max_source_bytes} bytes"]
                continue
            tree = env.parse(text)
            size = sum(1 for _ in tree.find_all(nodes.Node))
            if size > limits.max_source_bytes // BYTES_PER_NODE:
                errors[name] = [f"more than {limits.max_source_bytes // BYTES_PER_NODE} expressions and statements "
                                f"(Jinja nodes): {size}"]
                continue
            deep = _too_deep(tree)
            if deep is not None:
                errors[name] = [f"line {deep.lineno}: expressions nest more than {MAX_NESTING} deep"]
                continue
            refused = [f"line {node.lineno}: a template cannot extend, include or import another"
                       for node in tree.find_all(_NO_LOADER)]
            if refused:
                errors[name] = refused
                continue
            undeclared |= meta.find_undeclared_variables(tree) & _unconditional(tree)
            parts[name] = env.from_string(tree)
        except UnicodeEncodeError:
            errors[name] = ["not valid Unicode (a lone surrogate)"]
        except jinja2.TemplateSyntaxError as exc:
            errors[name] = [template_schema.short(f"line {exc.lineno}: {exc.message}")]
        except RecursionError:
            errors[name] = ["nests too deeply"]
        except Exception as exc:  # whatever a source does to the parser or compiler is its own error
            errors[name] = [template_schema.short(f"does not compile: {type(exc).__name__}: {exc}")]
    schema = None
    if source.variables is not None:
        try:
            schema = template_schema.VariablesSchema(source.variables, limits.max_source_bytes)
        except ValueError as exc:
            errors["variables"] = [template_schema.short(str(exc))]
        except RecursionError:
            errors["variables"] = ["nests too deeply"]
    if errors:
        raise ValidationFailed("the template is not valid", errors)
    return Compiled(parts, tuple(sorted(undeclared - set(_PLAIN.globals))), schema)


def _too_deep(tree: nodes.Template) -> nodes.Node | None:
    """The first expression nested more than MAX_NESTING expressions deep, if any (walked without recursion)."""
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, nodes.Expr):
            depth += 1
            if depth > MAX_NESTING:
                return node
        else:
            depth = 0
        stack.extend(reversed([(child, depth) for child in node.iter_child_nodes()]))  # the first in the source first
    return None


def _unconditional(tree: nodes.Template) -> set[str]:
    """Names every render reads: outside `if` branches, loop bodies, macros, `and`/`or` right sides, `x if c
    else y` branches, `is defined` and `|default`. Missing, they are all named at once, before rendering; a
    name read only in a branch is named when the branch runs (StrictUndefined), as Jinja would."""
    names: set[str] = set()
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.Name):
            names.add(node.name)
        elif isinstance(node, nodes.If | nodes.CondExpr):
            stack.append(node.test)
        elif isinstance(node, nodes.For):
            stack.append(node.iter)
        elif isinstance(node, nodes.CallBlock):
            stack.append(node.call)
        elif isinstance(node, nodes.And | nodes.Or):
            stack.append(node.left)
        elif isinstance(node, nodes.Macro) or (
            isinstance(node, nodes.Test | nodes.Filter) and node.name in ("defined", "undefined", "default", "d")
        ):
            continue
        else:
            stack.extend(node.iter_child_nodes())
    return names


def render(compiled: Compiled, variables: Mapping[str, Any], limits: Limits) -> Rendered:
    """Render one message; ValidationFailed naming each missing or invalid variable, or the limit exceeded."""
    problems = [f"variables.{name}: is required" for name in compiled._required if name not in variables]
    if compiled._schema is not None:
        problems += compiled._schema.problems(variables)
    if problems:  # a name the template reads and the schema requires too is named once
        raise ValidationFailed("the variables do not fit the template", {"variables": list(dict.fromkeys(problems))})
    out: dict[str, str | None] = dict.fromkeys(PARTS)
    size = 0
    with template_budget.Spending(limits.render_timeout_ms, limits.max_output_bytes):
        for name, template in compiled._parts.items():
            try:
                out[name], size = _render_part(template, variables, size, limits.max_output_bytes)
            except Exception as exc:  # anything a template or its variables do is theirs to fix: a 422
                raise _failure(name, exc) from None
    subject = out["subject"]
    if subject is not None and message_rules.has_line_break(subject):
        raise ValidationFailed("the rendered subject is not a header", {"subject": ["contains CR or LF"]})
    if subject is not None and len(subject) > MAX_SUBJECT:
        raise ValidationFailed("the rendered subject is not a header",
                               {"subject": [f"longer than {MAX_SUBJECT} characters"]})
    return Rendered(subject=subject, html=out["html"], text=out["text"])


def _render_part(
    template: jinja2.Template, variables: Mapping[str, Any], size: int, limit: int
) -> tuple[str, int]:
    """One part's text, and the size of the message so far, checked piece by piece as the template yields."""
    chunks: list[str] = []
    append = chunks.append
    try:
        # Template.render() would join the pieces in one go: a loop printing a large variable could fill the
        # memory before the size were known. Pieces inside loops and macros are also counted by their budget.
        for piece in template.root_render_func(template.new_context(cast(dict[str, Any], variables))):
            size += len(piece)
            if size > limit:
                raise template_budget.Exceeded(f"the rendered message is larger than {limit} bytes")
            append(piece)
    except template_budget.Exceeded:
        raise
    except Exception:
        template.environment.handle_exception()  # raises it again, its traceback pointing into the template
    return "".join(chunks), size


def _failure(part: str, exc: Exception) -> ValidationFailed:
    """What went wrong in rendering `part`, as the 422 a client gets."""
    if isinstance(exc, template_budget.Exceeded):
        return ValidationFailed("the template is too costly", {"template": [str(exc)]})
    if isinstance(exc, RecursionError):
        return ValidationFailed("the template is too costly", {"template": ["recursion too deep"]})
    if isinstance(exc, MemoryError):
        return ValidationFailed("the template is too costly", {"template": ["out of memory"]})
    where = f"line {line}: " if (line := _template_line(exc)) else ""
    if isinstance(exc, jinja2.UndefinedError):
        missing = _UNDEFINED_NAME.fullmatch(exc.message or "")
        if missing:
            return ValidationFailed("the variables do not fit the template",
                                    {"variables": [f"{template_schema.path('variables', [missing[1]])}: is required"]})
        return ValidationFailed("the variables do not fit the template",
                                {"variables": [template_schema.short(f"{part} {where}{exc}")]})
    return ValidationFailed("the template failed to render",
                            {part: [template_schema.short(f"{where}{type(exc).__name__}: {exc}")]})


def _template_line(exc: BaseException) -> int | None:
    """The template line the error was raised at (Jinja rewrites tracebacks to point into the template)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
