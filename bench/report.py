"""The results table, on the terminal and in BENCHMARKS.md."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pathlib
import platform
import sys

from bench.measure import Throughput
from bench.steady import GROUPS, Line

NOTES_MARKER = "<!-- notes: everything below this line is kept by `bench/run.py --write` -->"


@dataclasses.dataclass
class Row:
    name: str
    result: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    ok: bool | None = None


def machine() -> str:
    """Cores, memory and CPU model of this machine."""
    model = ""
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    kib = int(pathlib.Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} cores ({model or platform.machine()}), {kib / 1024 / 1024:.0f} GB memory"


def interpreter() -> str:
    """The Python every mailer process of the run uses (the build matters: README, "The two commands")."""
    return f"Python {platform.python_version()} ({os.path.realpath(sys.executable)})"


def results_table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    lines = ["| measurement | result | baseline (same run) | ratio | target | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        met = "" if row.ok is None else ("yes" if row.ok else "**no**")
        lines.append(f"| {row.name} | {row.result} | {row.baseline} | {row.ratio} | {row.target} | {met} |")
    return "\n".join(lines)


def cpu_table(runs: dict[str, Throughput]) -> str:
    """CPU seconds of each process group during each end-to-end window (and its share of one core)."""
    groups = list(next(iter(runs.values())).cpu_s) if runs else []
    lines = ["| run | window | " + " | ".join(groups) + " | CPU per email | worker peak RSS |",
             "|---|---|" + "---|" * len(groups) + "---|---|"]
    for name, run in runs.items():
        cells = [f"{run.cpu_s[g]:.1f} s ({run.cpu_s[g] / run.wall_s:.0%})" for g in groups]
        rss = f"{run.worker_peak_rss_mb:.0f} MB"
        per_email = f"{run.cpu_ms_per_email:.2f} ms"
        lines.append(f"| {name} | {run.window_s:.1f} s | " + " | ".join(cells) + f" | {per_email} | {rss} |")
    return "\n".join(lines)


def steady_cpu_table(lines: list[Line]) -> str:
    """CPU per email of each process group in the best window of each steady line."""
    head = ["| steady line | emails/s | " + " | ".join(GROUPS) + " | all |", "|---|---|" + "---|" * (len(GROUPS) + 1)]
    body = []
    for line in lines:
        best = line.best
        cells = [f"{best.cpu_ms_per_email(group):.2f} ms" for group in GROUPS]
        body.append(f"| {line.connections} connections, {'grouped' if line.grouped else 'single'} events | "
                    f"{best.sent_per_s:,.0f} | " + " | ".join(cells) + f" | {best.cpu_ms_per_email():.2f} ms |")
    return "\n".join(head + body)


def document(command: str, config: str, rows: list[Row], runs: dict[str, Throughput], notes: str,
             steady: list[Line] | None = None) -> str:
    """The generated part of BENCHMARKS.md."""
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "# Benchmarks",
        "",
        f"- **Date**: {today}",
        f"- **Machine**: {machine()}; PostgreSQL, gunicorn, the workers, the simulator and the load generator"
        " all share it",
        f"- **Command**: `{command}`",
        f"- **Setup**: {config}",
        "",
        results_table(rows),
        "",
        "CPU time of each process group during each end-to-end run (for 3 from the first request on, queueing"
        " included; for 3b from the end of the queueing), as a share of one core over the run:",
        "",
        cpu_table(runs),
        "",
        *(["CPU per email of each process group in the steady scenario (14), in its best window:", "",
           steady_cpu_table(steady), ""] if steady else []),
        notes,
        "",
    ])


def write(path: pathlib.Path, generated: str) -> None:
    """Write BENCHMARKS.md: the generated part, then whatever was below the notes marker."""
    kept = ""
    if path.exists() and NOTES_MARKER in path.read_text():
        kept = path.read_text().split(NOTES_MARKER, 1)[1]
    path.write_text(generated + "\n" + NOTES_MARKER + (kept or "\n"))
