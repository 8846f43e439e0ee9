"""The benchmark's smoke test: `python bench/run.py --quick` end to end, every measurement.

Outside `testpaths`, so `scripts/test` does not run it (it takes about three minutes and wants a quiet
machine); run it by path: `.venv/bin/pytest bench/test_quick.py`.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.bench
def test_the_quick_benchmark_runs_every_measurement() -> None:
    result = subprocess.run(  # noqa: S603  # our own interpreter and script
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout
    for row in ("1. Ingest, single", "2. Ingest, batches", "2b. Ingest, batches of 500 naming a stored template",
                "2c. Ingest, 2b's 500 receipts rendered beforehand",
                "3. End to end", "3c. End to end with Mailjet's event", "4. Pickup latency", "5. Events",
                "6. History load: 100,000 sent jobs over 10 months", "7. Events, one grouped POST", "Worker memory",
                "8. Webhook fan-out", "8b. Webhook fan-out", "9. kill -9", "9b. kill -9", "10. Outage",
                "11. Retention: dropping the month", "12. Long snapshot", "13. PgBouncer: 3 and 3b",
                "14. Steady: single messages POSTed at a fixed rate by 8 wrk connections"):
        assert row in table, table
    for label in ("3 with", "3b with"):  # with the history, at both shared_buffers
        for setting in ("128MB (PostgreSQL's default)", "2GB |"):
            assert f"6. History: {label} 100,000 historic jobs, shared_buffers {setting}" in table, table
    assert "CPU per request: web" in table and "CPU per email: web" in table, table  # rows 1 and 2
    # 2b, with templates, beside 2 measured in the same run, and their ratio
    assert re.search(r"\| 2b\. .*CPU per email: web \d+ µs.*\| 2: [\d,]+ emails/s .*\| \d+% \|", table), table
    assert re.search(r"\| 2c\. .*CPU per email: web \d+ µs.*\| 2b: [\d,]+ emails/s \| 2b is \d+% of 2c \|",
                     table), table
    assert re.search(r"the stack's floor, .*: [\d,]+ req/s \(CPU per request", table), table  # row 1's baseline
    # No email sent twice: 3, 3b and 3c (3 rows), with history (4), 9 and 9b (2, and twice in their targets),
    # 10 (1), 12 (1), 13 (2: in its result and its target), 14 (2: single and grouped events)
    rows = "\n".join(line for line in table.splitlines() if line.startswith("| "))
    assert re.findall(r"(\d+) duplicates", rows) == ["0"] * 17, rows
    assert "| 8 connections, single events |" in table and "| 8 connections, grouped events |" in table, table
    assert re.search(r"13\. PgBouncer.*\| 3: \d+%, 3b: \d+% \|", rows), rows  # both compared with direct
    # No sender gave up waiting for the requests that counted on its wake-up (sql/migrations/0015)
    assert "gave up waiting for the requests that woke them: 0" in table, table
