"""domain/templating.py: parse errors by field and line, autoescape per part, strict variables, schema paths."""

from __future__ import annotations

import pytest

from mailer.domain import templating
from mailer.domain.errors import ValidationFailed

LIMITS = templating.Limits(max_source_bytes=64 * 1024, render_timeout_ms=200, max_output_bytes=1024 * 1024)


def source(subject=None, html=None, text=None, variables=None):
    return templating.Source(subject=subject, html=html, text=text, variables=variables)


def details(call, *args):
    with pytest.raises(ValidationFailed) as caught:
        call(*args)
    assert caught.value.http_status == 422
    return caught.value.details


def test_a_template_renders_each_part():
    compiled = templating.check(source("Hi {{ name }}", "<p>{{ name }}</p>", "Hello {{ name }}"), LIMITS)
    assert templating.render(compiled, {"name": "Ada"}, LIMITS) == templating.Rendered(
        subject="Hi Ada", html="<p>Ada</p>", text="Hello Ada"
    )


def test_an_absent_part_renders_as_none():
    compiled = templating.check(source(html="<b>x</b>"), LIMITS)
    assert templating.render(compiled, {}, LIMITS) == templating.Rendered(None, "<b>x</b>", None)


def test_a_parse_error_names_the_field_and_the_line():
    assert details(templating.check, source(html="<p>\n{{ a }}\n{{ b }</p>", text="{% if %}"), LIMITS) == {
        "html": ["line 3: unexpected '}'"],
        "text": ["line 1: Expected an expression, got 'end of statement block'"],
    }


def test_html_is_escaped_text_and_subject_are_not():
    compiled = templating.check(source("{{ v }}", "<p>{{ v }}</p>", "{{ v }}"), LIMITS)
    rendered = templating.render(compiled, {"v": "<b>&'\""}, LIMITS)
    assert rendered.html == "<p>&lt;b&gt;&amp;&#39;&#34;</p>"
    assert rendered.subject == rendered.text == "<b>&'\""


def test_a_variable_the_template_uses_but_was_not_given_is_named():
    compiled = templating.check(source("{{ name }}", "{{ item }}{{ name }}"), LIMITS)
    assert details(templating.render, compiled, {}, LIMITS) == {
        "variables": ["variables.item: is required", "variables.name: is required"]
    }


def test_a_tested_variable_may_be_missing():
    compiled = templating.check(source(html="{% if n is defined %}{{ n }}{% endif %}{{ m|default('-') }}"), LIMITS)
    assert templating.render(compiled, {}, LIMITS).html == "-"


def test_schema_violations_are_named_by_path():
    schema = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object", "properties": {"price": {"type": "number"}}}},
        },
    }
    compiled = templating.check(source(html="x", variables=schema), LIMITS)
    variables = {"items": [{"price": 1}, {"price": 2}, {"price": "abc"}]}
    assert details(templating.render, compiled, variables, LIMITS) == {
        "variables": ["variables: 'name' is a required property",
                      "variables.items[2].price: 'abc' is not of type 'number'"]
    }


def test_an_invalid_schema_is_refused_at_check():
    assert details(templating.check, source(html="x", variables={"type": "strnig"}), LIMITS) == {
        "variables": ["not a valid JSON Schema: schema.type: 'strnig' is not valid under any of the given schemas"]
    }


@pytest.mark.parametrize(("subject", "variables"), [
    ("{{ s }}", {"s": "a\nb"}),
    ("{{ s }}", {"s": "a\rb"}),
    ("Hi{{ '\\r\\n' }}Bcc: x@example.com", {}),
    ("Hi\n", {}),
])
def test_a_rendered_subject_with_cr_or_lf_is_refused(subject, variables):
    compiled = templating.check(source(subject=subject, html="x"), LIMITS)
    assert details(templating.render, compiled, variables, LIMITS) == {"subject": ["contains CR or LF"]}


def test_a_part_larger_than_the_limit_is_refused():
    assert details(templating.check, source(html="x" * (LIMITS.max_source_bytes + 1)), LIMITS) == {
        "html": [f"longer than {LIMITS.max_source_bytes} bytes"]
    }
