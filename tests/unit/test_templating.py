"""domain/templating.py: parse errors by field and line, autoescape per part, strict variables, schema paths."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import tracemalloc

import jinja2
import jinja2.sandbox
import jsonschema
import jsonschema_rs
import pytest

from mailer.domain import template_schema, template_size_checks, templating
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


@pytest.mark.parametrize("html", [
    "{% if discount %}{{ coupon }}{% endif %}",
    "{{ coupon if discount else '' }}",
    "{{ discount and coupon }}",
    "{% for i in range(discount) %}{{ coupon }}{% endfor %}",
    "{% macro c() %}{{ coupon }}{% endmacro %}{% if discount %}{{ c() }}{% endif %}",
])
def test_a_variable_read_only_in_a_branch_is_required_when_the_branch_runs(html):
    compiled = templating.check(source(html=html), LIMITS)
    assert templating.render(compiled, {"discount": 0}, LIMITS).html in ("", "0")
    assert details(templating.render, compiled, {"discount": 2}, LIMITS) == {
        "variables": ["variables.coupon: is required"]
    }
    assert details(templating.render, compiled, {}, LIMITS) == {"variables": ["variables.discount: is required"]}


def test_a_missing_key_of_a_variable_is_named_with_its_part_and_line():
    compiled = templating.check(source(text="Hi\n{{ user.name }}"), LIMITS)
    assert details(templating.render, compiled, {"user": {}}, LIMITS) == {
        "variables": ["text line 2: 'dict object' has no attribute 'name'"]
    }


def test_a_runtime_error_names_the_part_and_the_line():
    compiled = templating.check(source(html="a\nb\n{{ 1 // n }}"), LIMITS)
    assert details(templating.render, compiled, {"n": 0}, LIMITS) == {
        "html": ["line 3: ZeroDivisionError: integer division or modulo by zero"]
    }


def test_a_dict_key_is_read_before_a_method_of_the_same_name():
    compiled = templating.check(source(text="{% for i in order.items %}{{ i }}{% endfor %} {{ order.keys() }}"),
                                LIMITS)
    assert templating.render(compiled, {"order": {"items": [1, 2]}}, LIMITS).text == "12 dict_keys(['items'])"


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
        "variables": ["variables.name: is required", 'variables.items[2].price: "abc" is not of type "number"']
    }


def test_a_variable_the_template_reads_and_the_schema_requires_is_named_once():
    schema = {"type": "object", "required": ["name", "code"],
              "properties": {"order": {"type": "object", "required": ["id"]}}}
    compiled = templating.check(source(html="{{ name }} {{ order }}", variables=schema), LIMITS)
    assert details(templating.render, compiled, {}, LIMITS) == {
        "variables": ["variables.name: is required", "variables.order: is required", "variables.code: is required"]
    }
    assert details(templating.render, compiled, {"name": "Ann", "code": 1, "order": {}}, LIMITS) == {
        "variables": ["variables.order.id: is required"]
    }


def test_an_error_quoting_a_long_variable_is_cut_short():
    compiled = templating.check(source(html="{{ n // 0 }}", variables={"properties": {"b": {"type": "object"}}}),
                                LIMITS)
    [message] = details(templating.render, compiled, {"b": "x" * 100_000, "n": 1}, LIMITS)["variables"]
    assert message.startswith('variables.b: "xxx')
    assert len(message) == 300
    assert message.endswith("…")


@pytest.mark.parametrize(("pattern", "value"), [("^(a+)+$", "a" * 26 + "!"), ("^(a|aa)+$", "a" * 60 + "!")],
                         ids=["nested quantifier", "alternatives"])
def test_a_backtracking_pattern_is_refused_in_linear_time(pattern, value):
    schema = {"properties": {"s": {"type": "string", "pattern": pattern}}}
    compiled = templating.check(source(html="{{ s }}", variables=schema), LIMITS)
    started = time.monotonic()
    refusal = details(templating.render, compiled, {"s": value}, LIMITS)
    assert time.monotonic() - started < 0.1  # Python's re: 2 s for the first, minutes for the second
    assert refusal == {"variables": [f'variables.s: "{value}" does not match "{pattern}"']}


@pytest.mark.parametrize(("where", "schema"), [
    ("schema.properties.s.pattern: '\\\\1'", {"properties": {"s": {"pattern": "^(a|a)+\\1$"}}}),
    ("schema.items.pattern: '(?='", {"items": {"pattern": "^(?=(a+)+$)"}}),
    ("schema.anyOf[1].patternProperties.(?<!x)y: '(?<!'", {"anyOf": [{}, {"patternProperties": {"(?<!x)y": {}}}]}),
])
def test_a_pattern_needing_a_backtracking_engine_is_refused_at_check(where, schema):
    # jsonschema_rs runs these in fancy-regex, which backtracks up to its step limit: 1,000 valid values of
    # `^(?:(a|a)+\1x)?a` took 9 s to validate
    [message] = details(templating.check, source(html="x", variables=schema), LIMITS)["variables"]
    assert message.startswith(where + ": backreferences and lookarounds are not allowed")


def test_escaped_parentheses_and_backslashes_are_not_lookarounds_nor_backreferences():
    schema = {"properties": {"s": {"pattern": "^\\(\\?=\\\\1[(]$"}}}
    compiled = templating.check(source(html="{{ s }}", variables=schema), LIMITS)
    assert templating.render(compiled, {"s": "(?=\\1("}, LIMITS).html == "(?=\\1("


def test_an_invalid_schema_is_refused_at_check():
    assert details(templating.check, source(html="x", variables={"type": "strnig"}), LIMITS) == {
        "variables": ["not a valid JSON Schema: schema.type: 'strnig' is not valid under any of the given schemas"]
    }


@pytest.mark.parametrize(("subject", "variables"), [
    ("{{ s }}", {"s": "a\nb"}),
    ("{{ s }}", {"s": "a\rb"}),
    ("Hi{{ '\\r\\n' }}Bcc: x@example.com", {}),
    ("Hi\n", {}),
    ("{{ s }}", {"s": "\n"}),
])
def test_a_rendered_subject_with_cr_or_lf_is_refused(subject, variables):
    compiled = templating.check(source(subject=subject, html="x"), LIMITS)
    assert details(templating.render, compiled, variables, LIMITS) == {"subject": ["contains CR or LF"]}


def test_a_rendered_subject_longer_than_a_header_line_is_refused():
    compiled = templating.check(source(subject="{{ s }}", html="x"), LIMITS)
    assert templating.render(compiled, {"s": "x" * 998}, LIMITS).subject == "x" * 998
    assert details(templating.render, compiled, {"s": "x" * 999}, LIMITS) == {"subject": ["longer than 998 characters"]}


def test_a_part_larger_than_the_limit_is_refused():
    assert details(templating.check, source(html="x" * (LIMITS.max_source_bytes + 1)), LIMITS) == {
        "html": [f"longer than {LIMITS.max_source_bytes} bytes"]
    }


# --- a hostile template ends with the limit's 422, soon, and leaves the process fine ------------------------

FAST = templating.Limits(max_source_bytes=64 * 1024, render_timeout_ms=200, max_output_bytes=1024 * 1024)
# Wall time allowed for a render that hits the time limit: twice the limit, plus room for a loaded 2-core box
# (other processes' turns, and a garbage collection over the large variables below: up to 100 ms seen).
SLOW_BOUND_S = 2 * FAST.render_timeout_ms / 1000 + 0.15
# Python memory a refused render may allocate (tracemalloc's peak): a few times the output limit, never the
# gigabytes the template asked for.
MEMORY_BOUND = 40 * 1024 * 1024

# Variables as large as a request may carry: a long text, a long list of objects, a dict of many keys.
HOSTILE_VARIABLES = {"big": "<" * 500_000, "words": "a " * 500_000, "big_dict": {f"k{n}": n for n in range(20_000)},
                     "long": [{"y": n} for n in range(100_000)], "items": list(range(5000))}

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
    "attributes of a long variable": "{{ long|map(attribute='y')" + "|map(attribute='real')" * 30 + "|sum }}",
    "a filter applied directly, many times": "{{ words|wordcount }}" * 400,
    "generator filters drawn through one another": "{{ big" + "|select" * 50 + "|max }}",
    "a test applied directly, many times": "{{ 'z' is in long }}" * 500,
}


@pytest.mark.parametrize("html", SLOW.values(), ids=SLOW.keys())
def test_a_slow_template_ends_at_the_time_limit(html):
    details, elapsed = refused(html, HOSTILE_VARIABLES)
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
    "wordwrap of a long text": "{{ ('word ' * 20000)|wordwrap(10) }}",
    "title of a long text": "{{ ('word ' * 20000)|title }}",
    "sort of a long list": "{{ range(20000)|list|sort }}",
    "dictsort of a long dict": "{{ dict(**big_dict)|dictsort }}",
    "tojson of a long variable": "{{ long|tojson }}",
    "str.format width from an argument": "{{ '{:{w}}'.format(1, w=10**9) }}",
    "sort of a generator": "{{ ('x' * 1000000)|select|sort|length }}",
    "unique of a generator": "{{ ('x' * 1000000)|select|unique|list|length }}",
    "groupby of a generator": "{{ ('xy' * 500000)|select|groupby(0)|length }}",
    "list of a long string": "{{ ('x' * 1000000)|list|length }}",
    "batches of batches": "{{ ('x' * 1000000)|batch(1)|batch(1)|batch(1)|list|length }}",
    "batches of batches, drawn by max": "{{ ('x' * 1000000)|batch(1)|batch(1)|batch(1)|max }}",
}


@pytest.mark.parametrize("html", BIG.values(), ids=BIG.keys())
def test_a_template_building_a_huge_value_is_refused_before_it_is_built(html):
    tracemalloc.start()
    try:
        details, elapsed = refused(html, HOSTILE_VARIABLES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(details) == ["template"]
    assert peak < MEMORY_BOUND
    assert elapsed < SLOW_BOUND_S


@pytest.mark.parametrize("html", [
    "{% set a = ('f' * 1000000)|int(0, 16) %}{% set b = ('f' * 500000)|int(0, 16) %}{{ (a // b) % 10 }}",
    "{{ ('f' * 1000000)|int(0, 16) > 1 }}",
    *(f"{{{{ n {operator} 7 }}}}" for operator in ("//", "%", "-", "+", "/", "*", "**")),
])
def test_a_number_too_large_to_compute_with_is_refused(html):
    details, elapsed = refused(html, {"n": 2 ** 80_000})  # no JSON request holds it: 4,300 digits at most
    assert details == {"template": [f"a number larger than {template_size_checks.MAX_INT_BITS} bits"]}
    assert elapsed < SLOW_BOUND_S


def test_size_taking_filters_with_huge_sizes_but_small_results_are_fine():
    compiled = templating.check(source(html="{{ s|truncate(10**9) }}|{{ s|wordwrap(10**9) }}|{{ s|indent(0) }}"),
                                FAST)
    assert templating.render(compiled, {"s": "ab cd"}, FAST).html == "ab cd|ab cd|ab cd"


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


@pytest.mark.parametrize("html", ["{{ a }}" * 9000, "{{ a" + " ~ a" * 9000 + " }}", "{{ [" + "1, " * 9000 + "] }}"])
def test_a_part_too_costly_to_compile_is_refused_before_it_is(html):
    started = time.monotonic()
    [message] = details(templating.check, source(html=html), LIMITS)["html"]
    assert message.startswith(f"more than {LIMITS.max_source_bytes // 32} expressions and statements")
    assert time.monotonic() - started < 1.0  # parsing only: compiling these took 1 to 2.4 s


def or_chain(operands):
    return "{{ " + " or ".join(["x"] * operands) + " }}\n"


def test_expressions_nested_too_deep_are_refused_at_check_in_linear_time():
    limits = templating.Limits(max_source_bytes=128 * 1024, render_timeout_ms=200, max_output_bytes=1024 * 1024)
    started = time.monotonic()
    part = or_chain(templating.MAX_NESTING) + or_chain(190) * 4  # checking took 4.4 s (Jinja's optimizer)
    refused_parts = details(templating.check, source(part, part, part), limits)
    assert time.monotonic() - started < 1.0
    message = f"line 2: expressions nest more than {templating.MAX_NESTING} deep"
    assert refused_parts == {"subject": [message], "html": [message], "text": [message]}
    compiled = templating.check(source(text=or_chain(templating.MAX_NESTING)), limits)
    assert templating.render(compiled, {"x": "a"}, limits).text == "a\n"


def test_a_lone_surrogate_in_a_part_is_refused_at_check():
    assert details(templating.check, source(text="\ud800", html="ok"), LIMITS) == {
        "text": ["not valid Unicode (a lone surrogate)"]
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


def test_a_hostile_render_in_one_thread_leaves_the_others_their_budget():
    compiled = templating.check(RECEIPT, LIMITS)
    hostile = templating.check(source(html=SLOW["nested loops with no output"]), FAST)
    barrier = threading.Barrier(8)

    def receipts(n):
        barrier.wait()
        return [templating.render(compiled, RECEIPT_VARIABLES, LIMITS).html for _ in range(300)]

    def attack():
        barrier.wait()
        with pytest.raises(ValidationFailed) as caught:
            templating.render(hostile, {}, FAST)
        return caught.value.details

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        fine = [pool.submit(receipts, n) for n in range(7)]
        refused = pool.submit(attack)
        assert refused.result() == {"template": [f"rendering took longer than {FAST.render_timeout_ms} ms"]}
        assert all(result.result() == ["<ul><li>&lt;b&gt;: 2.50</li></ul>"] * 300 for result in fine)


# --- what an email template does renders as in plain Jinja: the budget changes costs, never output ----------

LEGIT = {
    "loop": "{% for i in items %}{{ loop.index }}/{{ loop.length }} {{ i.name }}{% if not loop.last %}, "
            "{% endif %}{{ loop.cycle('a', 'b') }}{% else %}none{% endfor %}",
    "empty loop": "{% for i in [] %}x{% else %}none{% endfor %}",
    "macro and call": "{% macro row(i, sep='-') %}<li>{{ i.name }}{{ sep }}{{ caller() }}</li>{% endmacro %}"
                      "{% macro plain(i, sep='-') %}{{ i.name }}{{ sep }}{{ varargs|join }}{% endmacro %}"
                      "{% for i in items %}{% call row(i, sep=':') %}{{ i.qty }}{% endcall %}{% endfor %}"
                      "{{ plain(items[0], '/', 1, 2) }}",
    "namespace total": "{% set ns = namespace(total=0, names='') %}{% for i in items %}"
                       "{% set ns.total = ns.total + i.price * i.qty %}{% set ns.names = ns.names ~ i.name ~ ';' %}"
                       "{% endfor %}{{ '%.2f'|format(ns.total) }} {{ ns.names }}",
    "set and filter blocks": "{% set greeting %}Hello {{ user.name }}{% endset %}{% filter upper %}{{ greeting }}"
                             "{% endfilter %}",
    "formats": "{{ '%05.1f|%-6s|%x' % (3.14159, 'ab', 255) }} {{ '{:>8.2f}|{name}'.format(2.5, name=user.name) }}"
               " {{ '%(a)s-%(b)s'|format(a=1, b=2) }}",
    "strings": "{{ user.name|title }} {{ user.name|upper|center(20) }}|{{ '  x '|trim }}|{{ user.bio|truncate(20) }}"
               "|{{ user.bio|wordwrap(15) }}|{{ 'a\nb'|indent(2, first=true) }}|{{ user.name|replace('a', 'A') }}"
               "|{{ 'x' * 3 }}|{{ 'ab' + 'cd' }}|{{ user.name.split()|join('+') }}|{{ user.name.startswith('A') }}",
    "lists": "{{ items|map(attribute='name')|join(', ') }}|{{ items|selectattr('qty', 'gt', 1)|list|length }}"
             "|{{ items|sum(attribute='qty') }}|{{ items|sort(attribute='price', reverse=true)|first }}"
             "|{{ items|map(attribute='qty')|max }}|{{ [3, 1, 2]|sort|reverse|list }}|{{ [1, 1, 2]|unique|list }}"
             "|{{ range(7)|batch(3, 0)|list }}|{{ range(7)|slice(2)|list }}|{{ ([1, 2] * 2) + [5] }}",
    "groupby and dicts": "{% for g in items|groupby('qty') %}{{ g.grouper }}:{{ g.list|length }};{% endfor %}"
                         "{% for k, v in {'b': 1, 'a': 2}|dictsort %}{{ k }}={{ v }}{% endfor %}"
                         "{{ dict(a=1)|items|list }}{{ {'x': [1, (2, 3)]} }}",
    "numbers": "{{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 10 / 4 }} {{ -3|abs }} {{ '42'|int + 1 }}"
               " {{ 2.567|round(1) }} {{ 1234567|filesizeformat }} {{ 10 is divisibleby 5 }} {{ 3 is odd }}",
    "escaping": "{{ user.bio }}|{{ user.bio|safe }}|{{ user.bio|e }}|{% autoescape false %}{{ user.bio }}"
                "{% endautoescape %}|{{ {'class': 'a\"b'}|xmlattr }}|{{ items[0]|tojson }}|{{ user.name|urlencode }}",
    "whitespace": "<ul>\n  {%- for i in items %}\n  <li>{{ i.name }}</li>\n  {%- endfor %}\n</ul>\n",
    "recursive loop": "{% for n in tree recursive %}<{{ n.name }}>{% if n.children %}{{ loop(n.children) }}"
                      "{% endif %}{% endfor %}",
    "globals": "{% set c = cycler('odd', 'even') %}{% set j = joiner(' | ') %}{% for i in items %}{{ j() }}"
               "{{ c.next() }}{% endfor %}{% with x = 5 %}{{ x }}{% endwith %}{# a comment #}"
               "{% raw %}{{ not a tag }}{% endraw %}",
    "tests and defaults": "{{ missing|default('none') }} {{ user.name is string }} {{ none is none }} "
                          "{{ 2 in [1, 2] }} {{ user.nickname|default(user.name) }}",
}
LEGIT_VARIABLES = {
    "user": {"name": "Ada Lovelace", "bio": "<b>Analyst</b> & poet of science, 1815-1852"},
    "items": [{"name": "Tea", "qty": 2, "price": 3.5}, {"name": "Cake", "qty": 1, "price": 4.25},
              {"name": "Jam", "qty": 3, "price": 2.0}],
    "tree": [{"name": "a", "children": [{"name": "b", "children": []}]}, {"name": "c", "children": []}],
}


@pytest.mark.parametrize("html", LEGIT.values(), ids=LEGIT.keys())
def test_an_email_template_renders_as_in_plain_jinja(html):
    plain = jinja2.sandbox.SandboxedEnvironment(
        autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    ).from_string(html).render(LEGIT_VARIABLES)
    compiled = templating.check(source(html=html), LIMITS)
    assert templating.render(compiled, LEGIT_VARIABLES, LIMITS).html == plain


# --- the variables schema: jsonschema_rs decides, jsonschema explains; the two must agree -------------------

AGREEMENT = [
    ({"type": "object", "required": ["a"], "properties": {"a": {"type": "string", "minLength": 2, "maxLength": 3}}},
     [{"a": "ab"}, {"a": "a"}, {"a": "abcd"}, {"a": "éé"}, {}, {"a": 1}, {"a": None}]),
    ({"properties": {"n": {"type": "integer", "minimum": 0, "exclusiveMaximum": 10, "multipleOf": 2}}},
     [{"n": 0}, {"n": 4}, {"n": 10}, {"n": -2}, {"n": 3}, {"n": 4.0}, {"n": 4.5}, {"n": True}]),
    ({"properties": {"x": {"type": "number", "multipleOf": 0.01}}}, [{"x": 1.23}, {"x": 0.1}, {"x": 1.234}]),
    ({"properties": {"e": {"enum": ["a", 1, None]}, "c": {"const": {"k": [1]}}}},
     [{"e": "a"}, {"e": None}, {"e": "b"}, {"c": {"k": [1]}}, {"c": {"k": [2]}}]),
    ({"properties": {"s": {"pattern": "^[A-Z]{2}-\\d+$"}, "f": {"format": "email"}}},
     [{"s": "AB-12"}, {"s": "ab-12"}, {"f": "not an email"}, {"f": "a@example.com"}]),
    ({"properties": {"l": {"type": "array", "items": {"type": "object", "properties": {"p": {"type": "number"}}},
                           "minItems": 1, "maxItems": 3, "uniqueItems": True}}},
     [{"l": [{"p": 1}]}, {"l": []}, {"l": [{"p": "x"}]}, {"l": [{}, {}]}, {"l": [{"p": 1}, {"p": 2}, {}, {}]}]),
    ({"properties": {"t": {"prefixItems": [{"type": "string"}, {"type": "number"}], "items": False}}},
     [{"t": ["a", 1]}, {"t": ["a"]}, {"t": [1, "a"]}, {"t": ["a", 1, 2]}]),
    ({"additionalProperties": False, "properties": {"a": {}}, "patternProperties": {"^x_": {"type": "integer"}}},
     [{"a": 1}, {"x_1": 2}, {"x_1": "2"}, {"b": 1}]),
    ({"$defs": {"money": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}},
      "properties": {"total": {"$ref": "#/$defs/money"}, "items": {"items": {"$ref": "#/$defs/money"}}}},
     [{"total": {"amount": 1}}, {"total": {}}, {"items": [{"amount": 1}, {"amount": "1"}]}]),
    ({"properties": {"v": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                     "w": {"anyOf": [{"minimum": 5}, {"type": "string"}]},
                     "z": {"allOf": [{"type": "integer"}, {"not": {"const": 3}}]}}},
     [{"v": "a"}, {"v": 1.5}, {"w": 1}, {"w": "s"}, {"w": 6}, {"z": 3}, {"z": 4}]),
    ({"if": {"properties": {"kind": {"const": "gift"}}}, "then": {"required": ["message"]},
      "dependentRequired": {"coupon": ["discount"]}},
     [{"kind": "gift"}, {"kind": "gift", "message": "hi"}, {"kind": "x"}, {"coupon": "c"},
      {"coupon": "c", "discount": 1}]),
    ({"$schema": "http://json-schema.org/draft-07/schema#", "properties": {
        "t": {"items": [{"type": "string"}], "additionalItems": False}, "f": {"format": "date"}}},
     [{"t": ["a"]}, {"t": ["a", "b"]}, {"t": [1]}, {"f": "nope"}]),
    ({"$schema": "http://json-schema.org/draft-04/schema#",
      "properties": {"n": {"maximum": 5, "exclusiveMaximum": True}}},
     [{"n": 4}, {"n": 5}]),
]


@pytest.mark.parametrize(("schema", "instances"), AGREEMENT)
def test_jsonschema_rs_and_jsonschema_agree(schema, instances):
    explain = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)
    compiled = templating.check(source(html="x", variables=schema), LIMITS)
    for instance in instances:
        valid = explain.is_valid(instance)
        assert jsonschema_rs.validator_for(schema, validate_formats=False, offline=True).is_valid(instance) == valid
        if valid:
            templating.render(compiled, instance, LIMITS)
        else:
            # worded by jsonschema_rs, at (or, for an extra item, inside) the paths the reference validator names
            named = {m.split(": ", 1)[0] for m in details(templating.render, compiled, instance, LIMITS)["variables"]}
            expected = {template_schema.path("variables", e.absolute_path) for e in explain.iter_errors(instance)}
            assert all(any(n.startswith(e) for e in expected) for n in named)
            assert all(any(n.startswith(e) for n in named) for e in expected)


@pytest.mark.parametrize(("variables", "message"), [
    (True, "not a JSON Schema: an object is expected"),
    ({"type": {1, 2}}, "not a JSON Schema: not JSON"),
    ({"type": "object", "description": "x" * LIMITS.max_source_bytes}, f"the schema is longer than {64 * 1024} bytes"),
])
def test_a_schema_that_is_not_one_is_refused_at_check(variables, message):
    assert details(templating.check, source(html="x", variables=variables), LIMITS) == {"variables": [message]}


def test_a_part_that_is_not_a_string_is_refused_at_check():
    assert details(templating.check, source(subject=3, html="x"), LIMITS) == {"subject": ["must be a string"]}


def test_a_schema_never_reaches_out_to_the_network():
    schema = {"properties": {"a": {"$ref": "http://127.0.0.1:9/schema.json"}}}
    [message] = details(templating.check, source(html="x", variables=schema), LIMITS)["variables"]
    assert message.startswith("the schema cannot be used: ")
    assert "Retrieval is disabled" in message


def test_a_schema_of_an_unknown_draft_is_refused():
    schema = {"$schema": "https://example.com/my-draft", "type": "object"}
    [message] = details(templating.check, source(html="x", variables=schema), LIMITS)["variables"]
    assert message.startswith("the schema cannot be used: ")
