"""What rendering one message from a stored template costs, in-process (mailer/domain/templating.py).

    .venv/bin/python bench/render_cost.py [--messages 500] [--rounds 7]

A realistic receipt (a subject with a name, about 3 KB of html looping over 5 items with a few conditionals,
a text part, a JSON Schema of its variables) is checked once, then rendered `--messages` times with
different variables, as a batch of 500 on POST /queue would be. Prints the median µs per message of each
round for: templating.render (schema validation, the sandbox and its cost budget); the same template in a
plain jinja2 SandboxedEnvironment with no budget nor schema (what the budget costs); and
jsonschema validation alone. Compare with batch ingest without templates: 44 µs of web CPU per email
(BENCHMARKS.md, row 2), against the issue's target of batch ingest with templates ≥ 50 % of it.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jinja2.sandbox  # noqa: E402  # after the path fix above
import jsonschema  # noqa: E402

from mailer.domain import templating  # noqa: E402

ROW = """
        <tr class="item">
          <td style="padding:8px 0;border-bottom:1px solid #eeeeee;font-family:Helvetica,Arial,sans-serif">
            {{ item.name }}{% if item.sku %} <span style="color:#999999">({{ item.sku }})</span>{% endif %}
          </td>
          <td style="padding:8px 0;border-bottom:1px solid #eeeeee;text-align:right">{{ item.quantity }}</td>
          <td style="padding:8px 0;border-bottom:1px solid #eeeeee;text-align:right">
            {{ "%.2f"|format(item.price * item.quantity) }} {{ currency }}</td>
        </tr>"""
HTML = (
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Your receipt</title>
<style>body{margin:0;padding:0;background:#f6f6f6} .wrap{max-width:600px;margin:0 auto;background:#ffffff}
h1{font-family:Helvetica,Arial,sans-serif;font-size:22px;color:#333333} td{font-size:14px;color:#333333}
.footer{font-family:Helvetica,Arial,sans-serif;font-size:12px;color:#999999;padding:24px}</style></head>
<body><div class="wrap">
  <table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="padding:24px">
    <tr><td><h1>Thank you for your order, {{ customer.first_name }}!</h1>
      <p style="font-family:Helvetica,Arial,sans-serif;line-height:1.5">Order <strong>#{{ order_id }}</strong>,
      placed on {{ placed_on }}. {% if shipping.express %}It ships today by express delivery.{% else %}It
      ships within two working days.{% endif %}</p></td></tr>
    <tr><td><table role="presentation" width="100%" cellpadding="0" cellspacing="0">
        <tr><th align="left">Item</th><th align="right">Qty</th><th align="right">Price</th></tr>"""
    + "{% for item in items %}" + ROW + "{% endfor %}"
    + """
        <tr><td colspan="2" style="padding:12px 0;text-align:right"><strong>Total</strong></td>
          <td style="padding:12px 0;text-align:right"><strong>{{ "%.2f"|format(total) }} {{ currency }}</strong>
          </td></tr>
        {% if discount %}<tr><td colspan="3" style="color:#2a7a2a">You saved {{ discount }} {{ currency }}
          with code {{ coupon|upper }}.</td></tr>{% endif %}
    </table></td></tr>
    <tr><td style="padding-top:24px;font-family:Helvetica,Arial,sans-serif">Shipping to:<br>
      {{ shipping.name }}<br>{{ shipping.street }}<br>{{ shipping.postcode }} {{ shipping.city }}</td></tr>
  </table>
  <div class="footer">Questions? Reply to this email or visit our help centre. You receive this email because
  you placed an order with Example Shop. Example Shop, 1 Example Street, 75001 Paris.</div>
</div></body></html>
"""
)
TEXT = """Thank you for your order, {{ customer.first_name }}!

Order #{{ order_id }}, placed on {{ placed_on }}.
{% for item in items %}- {{ item.quantity }} x {{ item.name }}: {{ "%.2f"|format(item.price * item.quantity) }}
{% endfor %}Total: {{ "%.2f"|format(total) }} {{ currency }}
"""
SUBJECT = "Your receipt for order #{{ order_id }}, {{ customer.first_name }}"
ITEM = {"type": "object", "required": ["name", "quantity", "price"],
        "properties": {"name": {"type": "string"}, "sku": {"type": "string"},
                       "quantity": {"type": "integer", "minimum": 1}, "price": {"type": "number"}}}
SCHEMA = {
    "type": "object",
    "required": ["customer", "order_id", "items", "total", "currency", "shipping"],
    "properties": {
        "customer": {"type": "object", "required": ["first_name"], "properties": {"first_name": {"type": "string"}}},
        "order_id": {"type": "string"},
        "items": {"type": "array", "items": ITEM, "maxItems": 100},
        "total": {"type": "number"},
        "currency": {"type": "string"},
        "shipping": {"type": "object"},
    },
}


def variables(n: int) -> dict[str, Any]:
    """The variables of the n-th message: 5 items, a name with characters to escape."""
    items = [{"name": f"Widget <{k}> & co", "sku": f"W-{n}-{k}", "quantity": k + 1, "price": 9.99 + k}
             for k in range(5)]
    return {
        "customer": {"first_name": f"Ada {n}"}, "order_id": f"A{n:06d}", "placed_on": "2026-12-05",
        "items": items, "total": sum(i["price"] * i["quantity"] for i in items), "currency": "EUR",
        "discount": 5 if n % 2 else 0, "coupon": "winter",
        "shipping": {"express": n % 3 == 0, "name": f"Ada {n}", "street": "1 Rue de Rivoli",
                     "postcode": "75001", "city": "Paris"},
    }


def per_message(render: Callable[[dict[str, Any]], Any], batch: list[dict[str, Any]]) -> float:
    """µs per message of rendering the whole batch."""
    start = time.perf_counter()
    for item in batch:
        render(item)
    return (time.perf_counter() - start) / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    limits = templating.Limits(max_source_bytes=128 * 1024, render_timeout_ms=200, max_output_bytes=1024 * 1024)
    compiled = templating.check(templating.Source(SUBJECT, HTML, TEXT, SCHEMA), limits)
    batch = [variables(n) for n in range(args.messages)]
    plain = {escape: jinja2.sandbox.SandboxedEnvironment(autoescape=escape, keep_trailing_newline=True)
             for escape in (True, False)}
    plain_parts = [plain[False].from_string(SUBJECT), plain[True].from_string(HTML), plain[False].from_string(TEXT)]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    variants: dict[str, Callable[[dict[str, Any]], Any]] = {
        "templating.render": lambda v: templating.render(compiled, v, limits),
        "plain sandbox": lambda v: [part.render(v) for part in plain_parts],
        "jsonschema alone": lambda v: list(validator.iter_errors(v)),
    }
    rendered = templating.render(compiled, batch[0], limits)
    if rendered.html != plain_parts[1].render(batch[0]):
        raise SystemExit("the budget changed the output")
    print(f"html {len(rendered.html or '')} bytes, text {len(rendered.text or '')}, source {len(HTML)} bytes")
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, render in variants.items():  # interleaved, so that the machine's load falls on all alike
            results[name].append(per_message(render, batch))
    for name, rounds in results.items():
        print(f"{name:18} {statistics.median(rounds):7.1f} µs per message  (rounds: "
              + ", ".join(f"{r:.1f}" for r in rounds) + ")")


if __name__ == "__main__":
    main()
