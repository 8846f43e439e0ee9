"""A real worker process sends big messages and gives the memory back (RSS read from /proc)."""

from __future__ import annotations

import base64
import os
import pathlib

import psycopg
import pytest
import requests

from mailer.services import queueing
from tests.e2e.conftest import running_system, wait_until

pytestmark = pytest.mark.e2e

BIG_JOBS = 12
ATTACHMENT_BYTES = 14 * 1024 * 1024  # base64 text, as stored and sent
# What the worker may keep once the big messages are gone (allocator slack). It kept 439 MB with 50 jobs a
# call; with calls bounded, 42-56 MB in libpq buffers of pooled connections, or 56 MB in thread arenas
# when glibc's mmap threshold was not pinned (mailer/memory.py).
RSS_MARGIN_MB = 25


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory (or another /proc status field) in MB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def status(web_url: str, auth: dict[str, str], job_id: str) -> str:
    return requests.get(f"{web_url}/status/{job_id}", headers=auth, timeout=10).json()["status"]


def test_the_worker_gives_back_the_memory_of_big_messages(database_url: str, tmp_path: pathlib.Path) -> None:
    with running_system(database_url, tmp_path) as system:
        worker = system.processes["worker"].pid
        small = requests.post(f"{system.web_url}/queue", headers=system.auth, timeout=10, json={
            "from": {"email": "shop@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "Hi", "text": "hi",
        }).json()["id"]
        wait_until(lambda: status(system.web_url, system.auth, small) == "sent", 30, message="warm-up job sent")
        before = rss_mb(worker)

        content = base64.b64encode(os.urandom(ATTACHMENT_BYTES * 3 // 4)).decode()
        with psycopg.connect(database_url) as conn, conn.transaction():  # all due at once: one claim's worth
            app_id = conn.execute("SELECT id FROM apps WHERE name = 'e2e'").fetchone()[0]
            ids = [queueing.insert(conn, app_id, [queueing.NewJob(message={
                "from": {"email": "reports@example.com"}, "to": [{"email": f"reader{i}@example.org"}],
                "subject": "Report", "text": "attached",
                "attachments": [{"filename": "report.pdf", "content_type": "application/pdf", "content": content}],
            })], batch_size=50)[0]["id"] for i in range(BIG_JOBS)]
        del content

        wait_until(lambda: all(status(system.web_url, system.auth, i) == "sent" for i in ids), 180, interval=0.5,
                   message="the big jobs sent")
        peak = rss_mb(worker, "VmHWM")
        sends = requests.get(f"{system.simulator_url}/_sim/sends", timeout=10).json()
        try:
            after = wait_until(lambda: (mb := rss_mb(worker)) <= before + RSS_MARGIN_MB and mb, 15, interval=0.5,
                               message="worker RSS back near its start")
        finally:
            print(f"worker RSS: {before:.0f} MB before, peak {peak:.0f} MB, {rss_mb(worker):.0f} MB after")

    # Each 14 MB message went alone (MAILER_SEND_MAX_CALL_BYTES), none twice.
    assert sends["calls"] >= 1 + BIG_JOBS
    assert all(sends["by_custom_id"][i] == 1 for i in ids)
    assert after <= before + RSS_MARGIN_MB
