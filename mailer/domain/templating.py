"""Stored templates: parse once (check), render many times (render), in Jinja2's sandbox with bounded cost."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

import jinja2
import jsonschema
import jsonschema.exceptions
import jsonschema.validators
from jinja2 import meta, nodes, sandbox

from mailer.domain.errors import ValidationFailed

PARTS = ("subject", "html", "text")


@dataclasses.dataclass(frozen=True)
class Source:
    """One template version as the app gave it."""

    subject: str | None
    html: str | None
    text: str | None
    variables: Mapping[str, Any] | None  # a JSON Schema (draft 2020-12 unless it says) of the variables


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one template may cost (Settings.template_limits())."""

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


def _environment(autoescape: bool) -> sandbox.SandboxedEnvironment:
    env = sandbox.ImmutableSandboxedEnvironment(
        autoescape=autoescape, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    env.globals.pop("lipsum", None)
    return env


# Two environments: autoescape is per part (html escapes, text and subject do not).
_ESCAPED = _environment(autoescape=True)
_PLAIN = _environment(autoescape=False)


class Compiled:
    """A checked template version: parsed once, reusable by many threads at once (nothing in it changes)."""

    __slots__ = ("_parts", "_required", "_validator")

    def __init__(
        self,
        parts: dict[str, jinja2.Template],
        required: frozenset[str],
        validator: jsonschema.protocols.Validator | None,
    ) -> None:
        self._parts = parts
        self._required = required
        self._validator = validator


def check(source: Source, limits: Limits) -> Compiled:
    """Parse every part and the schema; ValidationFailed naming each field (and line) that is wrong."""
    errors: dict[str, list[str]] = {}
    parts: dict[str, jinja2.Template] = {}
    undeclared: set[str] = set()
    for name in PARTS:
        text = getattr(source, name)
        if text is None:
            continue
        if len(text.encode()) > limits.max_source_bytes:
            errors[name] = [f"longer than {limits.max_source_bytes} bytes"]
            continue
        env = _ESCAPED if name == "html" else _PLAIN
        try:
            tree = env.parse(text)
            undeclared |= meta.find_undeclared_variables(tree) - _guarded(tree)
            parts[name] = env.from_string(tree)
        except jinja2.TemplateSyntaxError as exc:
            errors[name] = [f"line {exc.lineno}: {exc.message}"]
        except Exception as exc:  # whatever a source does to the parser is its own error
            errors[name] = [f"does not parse: {type(exc).__name__}"]
    validator = None
    if source.variables is not None:
        try:
            validator = _validator(source.variables, limits)
        except ValueError as exc:
            errors["variables"] = [str(exc)]
    if errors:
        raise ValidationFailed("the template is not valid", errors)
    return Compiled(parts, frozenset(undeclared - set(_PLAIN.globals)), validator)


def _guarded(tree: nodes.Template) -> set[str]:
    """Names the template tests (`is defined`, `|default`): they may be missing, so they are not required."""
    names: set[str] = set()
    for node in tree.find_all((nodes.Test, nodes.Filter)):
        if node.name in ("defined", "undefined", "default", "d") and isinstance(node.node, nodes.Name):
            names.add(node.node.name)
    return names


def _validator(schema: Mapping[str, Any], limits: Limits) -> jsonschema.protocols.Validator:
    if len(json.dumps(schema).encode()) > limits.max_source_bytes:
        raise ValueError(f"the schema is longer than {limits.max_source_bytes} bytes")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {_path('schema', exc.absolute_path)}: {exc.message}") from None
    return cls(schema)


def _path(root: str, path: Any) -> str:
    out = root
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else f".{key}"
    return out


def render(compiled: Compiled, variables: Mapping[str, Any], limits: Limits) -> Rendered:
    """Render one message; ValidationFailed naming each missing or invalid variable, or the limit exceeded."""
    problems = [f"{_path('variables', [name])}: is required" for name in sorted(compiled._required - set(variables))]
    if compiled._validator is not None:
        for error in sorted(compiled._validator.iter_errors(variables), key=lambda e: list(e.absolute_path)):
            problems.append(f"{_path('variables', error.absolute_path)}: {error.message}")
    if problems:
        raise ValidationFailed("the variables do not fit the template", {"variables": problems})
    deadline = time.monotonic() + limits.render_timeout_ms / 1000
    out: dict[str, str | None] = dict.fromkeys(PARTS)
    size = 0
    for name, template in compiled._parts.items():
        chunks: list[str] = []
        try:
            for chunk in template.generate(variables):
                size += len(chunk)
                if size > limits.max_output_bytes:
                    raise ValidationFailed(
                        "the template is too costly",
                        {"template": [f"rendered output is larger than {limits.max_output_bytes} bytes"]},
                    )
                if time.monotonic() > deadline:
                    raise ValidationFailed(
                        "the template is too costly",
                        {"template": [f"rendering took longer than {limits.render_timeout_ms} ms"]},
                    )
                chunks.append(chunk)
        except ValidationFailed:
            raise
        except jinja2.UndefinedError as exc:
            raise ValidationFailed(
                "the variables do not fit the template", {"variables": [f"variables: {exc.message}"]}
            ) from None
        except Exception as exc:  # anything a template does is its own error
            raise ValidationFailed(
                "the template failed to render", {name: [f"{type(exc).__name__}: {exc}"]}
            ) from None
        out[name] = "".join(chunks)
    subject = out["subject"]
    if subject is not None and ("\r" in subject or "\n" in subject):
        raise ValidationFailed("the rendered subject is not a header", {"subject": ["contains CR or LF"]})
    return Rendered(subject=subject, html=out["html"], text=out["text"])
