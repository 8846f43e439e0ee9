"""domain/templating.py: parse errors by field and line, autoescape per part, strict variables, schema paths."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import tracemalloc

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


# --- a hostile template ends with the limit's 422, soon, and leaves the process fine ------------------------

FAST = templating.Limits(max_source_bytes=64 * 1024, render_timeout_ms=150, max_output_bytes=1024 * 1024)
# Wall time allowed for a render that hits the time limit: twice the limit, plus room for a loaded 2-core box.
SLOW_BOUND_S = 2 * FAST.render_timeout_ms / 1000 + 0.1
# Python memory a refused render may allocate (tracemalloc's peak): a few times the output limit, never the
# gigabytes the template asked for.
MEMORY_BOUND = 40 * 1024 * 1024

RECEIPT = source(
    subject="Order {{ order }}",
    html="<ul>{% for item in items %}<li>{{ item.name }}: {{ '%.2f'|format(item.price) }}</li>{% endfor %}</ul>",
    text="{% for item in items %}{{ item.name }}\n{% endfor %}",
)
RECEIPT_VARIABLES = {"order": "A1", "items": [{"name": "<b>", "price": 2.5}]}


def refused(html, variables=None, limits=FAST):
    """Render a hostile html part: the 422's details and the wall time it took; the process renders after."""
    compiled = templating.check(source(html=html), limits)
    started = time.monotonic()
    with pytest.raises(ValidationFailed) as caught:
        templating.render(compiled, variables or {}, limits)
    elapsed = time.monotonic() - started
    assert caught.value.http_status == 422
    fine = templating.render(templating.check(RECEIPT, limits), RECEIPT_VARIABLES, limits)
    assert fine.html == "<ul><li>&lt;b&gt;: 2.50</li></ul>"
    return caught.value.details, elapsed


SLOW = {
    "nested loops with no output": "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
    "nested loops whose test is false": "{% for a in range(99999) %}{% for b in range(99999) if b < 0 %}"
                                        "{% endfor %}{% endfor %}",
    "exponential macro": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "long variables in nested loops": "{% for a in items %}{% for b in items %}{% for c in items %}"
                                      "{% endfor %}{% endfor %}{% endfor %}",
    "namespaces nested in namespaces": "{% set ns = namespace(a='x') %}{% for i in range(99) %}"
                                       "{% set n = namespace() %}{% set n.a = ns.a %}{% set n.b = ns.a %}"
                                       "{% set ns.a = n %}{% endfor %}{{ ns.a }}",
    "a test over a long list per item": "{{ range(99999)|select('in', range(50000)|list)|list|length }}",
}


@pytest.mark.parametrize("html", SLOW.values(), ids=SLOW.keys())
def test_a_slow_template_ends_at_the_time_limit(html):
    details, elapsed = refused(html, {"items": list(range(5000))})
    assert details == {"template": [f"rendering took longer than {FAST.render_timeout_ms} ms"]}
    assert FAST.render_timeout_ms / 1000 <= elapsed < SLOW_BOUND_S


BIG = {
    "string times a large number": "{{ 'x' * 10**9 }}",
    "list times a large number": "{{ [1, 2] * 10**9 }}",
    "center": "{{ 'a'|center(10**9) }}",
    "str.center": "{{ 'a'.center(10**9) }}",
    "ljust": "{{ 'a'.ljust(10**9) }}",
    "zfill": "{{ 'a'.zfill(10**9) }}",
    "indent": "{{ 'a\nb\nc'|indent(10**8) }}",
    "wordwrap": "{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 10000) }}",
    "format width": "{{ '%0999999999d'|format(1) }}",
    "format fields": "{{ ('%s' * 1000)|format(*(['x' * 100000] * 1000)) }}",
    "percent": "{{ '%s' * 1000 % ((('x' * 100000),) * 1000) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "str.format fields": "{{ ('{0}' * 100000).format('x' * 100000) }}",
    "join of a range": "{{ range(99999)|join('x' * 100000) }}",
    "str.join of a range": "{{ ('x' * 100000).join(range(99999)|map('string')) }}",
    "join of big items": "{{ range(99999)|map('center', 1000000)|join }}",
    "list of big items": "{% set l = range(99999)|map('center', 1000000)|list %}",
    "replace": "{{ ('x' * 100000)|replace('', 'y' * 100000) }}",
    "str.replace": "{{ ('x' * 100000).replace('x', 'y' * 100000) }}",
    "expandtabs": "{{ ('\t' * 100000).expandtabs(100000) }}",
    "a string doubled in a loop": "{% set ns = namespace(s='x') %}{% for i in range(99) %}"
                                  "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "a list doubled in a loop": "{% set ns = namespace(s=[1]) %}{% for i in range(99) %}"
                                "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "a list nesting itself twice": "{% set ns = namespace(a=['x']) %}{% for i in range(99) %}"
                                   "{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}",
    "one big list many times": "{% set big = range(50000)|list %}{{ [big] * 99999 }}",
    "many sets of big strings": "".join(f"{{% set a{i} = ('x' * 1000000) ~ '{i}' %}}" for i in range(40)),
    "macro returning big halves": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}"
                                  "{{ 'x' * 1000000 }}{% endif %}{% endmacro %}{{ f(20) }}",
    "a big literal in a long loop": "{% for i in range(99999) %}" + "x" * 1000 + "{% endfor %}",
    "a big variable in a long loop": "{% for i in range(99999) %}{{ big }}{% endfor %}",
    "a big set block in a loop": "{% for i in range(99999) %}{% set b %}{{ big }}{{ big }}{% endset %}{% endfor %}",
    "a number times itself": "{% set ns = namespace(n=10) %}{% for i in range(99) %}{% set ns.n = ns.n * ns.n %}"
                             "{% endfor %}",
    "a power tower": "{{ 10 ** (10 ** 10) }}",
    "batch filled": "{{ [1]|batch(10**9, 'x')|list }}",
    "slice": "{{ [1]|slice(10**9)|list }}",
    "sum of lists": "{{ ([[1] * 1000] * 1000)|sum(start=[]) }}",
    "tojson indented": "{{ [1]|tojson(indent=10**6) }}",
    "format width from an argument": "{{ '%*d'|format(10**9, 1) }}",
    "str.format width from an argument": "{{ '{:{w}}'.format(1, w=10**9) }}",
}


@pytest.mark.parametrize("html", BIG.values(), ids=BIG.keys())
def test_a_template_building_a_huge_value_is_refused_before_it_is_built(html):
    tracemalloc.start()
    try:
        details, elapsed = refused(html, {"big": "<" * 500_000})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(details) == ["template"]
    assert peak < MEMORY_BOUND
    assert elapsed < SLOW_BOUND_S


@pytest.mark.parametrize("html", [
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}",
])
def test_unbounded_recursion_is_refused(html):
    assert refused(html)[0] == {"template": ["recursion too deep"]}


@pytest.mark.parametrize(("html", "message"), [
    ("{{ range(10**12)|list }}", "OverflowError: Range too big"),
    ("{{ (1).to_bytes(10**9, 'big') }}", "SecurityError: access to attribute 'to_bytes' of 'int' object is unsafe"),
    ("{{ ''.__class__ }}", "SecurityError: access to attribute '__class__' of 'str' object is unsafe"),
    ("{{ cycler.__init__.__globals__ }}", "SecurityError"),
    ("{{ items.append(1) }}", "SecurityError: access to attribute 'append' of 'list' object is unsafe"),
])
def test_what_the_sandbox_refuses_is_a_422_naming_the_line(html, message):
    details, _ = refused("\n" + html, {"items": [1]})
    [text] = details["html"]
    assert text.startswith("line 2: ")
    assert message in text


def test_what_is_not_needed_in_an_email_is_not_there():
    compiled = templating.check(source(html="{{ lipsum() }}"), LIMITS)
    assert details(templating.render, compiled, {}, LIMITS) == {"variables": ["variables.lipsum: is required"]}
    for dropped in ("random", "pprint", "urlize"):
        assert details(templating.check, source(html=f"\n{{{{ 'x'|{dropped} }}}}"), LIMITS) == {
            "html": [f"line 2: No filter named '{dropped}'."]
        }


def test_include_import_and_extends_are_refused_at_check():
    assert details(templating.check, source(html="a\n{% include 'x' %}{% import 'y' as y %}"), LIMITS) == {
        "html": ["line 2: a template cannot extend, include or import another"] * 2
    }


def test_one_compiled_template_serves_8_threads_at_once():
    compiled = templating.check(RECEIPT, LIMITS)
    batches = [[{"order": f"{t}-{n}", "items": [{"name": f"<{t}>", "price": n}] * (n % 7)} for n in range(200)]
               for t in range(8)]
    expected = [[templating.render(compiled, v, LIMITS) for v in batch] for batch in batches]
    barrier = threading.Barrier(8)

    def run(batch):
        barrier.wait()
        return [templating.render(compiled, v, LIMITS) for v in batch]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(run, batches)) == expected
