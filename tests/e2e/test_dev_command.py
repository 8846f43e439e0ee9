"""`mailer dev` as a terminal runs it: Ctrl-C (SIGINT to the foreground process group) stops everything."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from mailer import pgcluster
from tests.e2e.conftest import ROOT, wait_until

pytestmark = pytest.mark.e2e


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_stops_every_process_and_frees_the_port(database_url: str, tmp_path: pathlib.Path) -> None:
    port = pgcluster.free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MAILJET_", "MAILER_"))}
    env.update(DATABASE_URL=database_url, PORT=str(port), PYTHONUNBUFFERED="1")
    output = tmp_path / "dev.log"
    processes: list[int] = []
    with output.open("wb") as out:
        # A process group of its own, as a shell gives a foreground job.
        dev = subprocess.Popen([sys.executable, "-m", "mailer.cli", "dev", "--dir", str(tmp_path / "dev")],  # noqa: S603
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "API key of the dev app" in output.read_text(), 60, message="mailer dev ready")
        processes += _descendants(dev.pid)
        assert len(processes) >= 3, output.read_text()[-3000:]  # simulator, gunicorn (and its workers), worker
        # Ctrl-C reaches the terminal's process group: `mailer dev` alone, which stops its children itself.
        assert all(os.getpgid(pid) != dev.pid for pid in processes if _alive(pid))

        os.killpg(dev.pid, signal.SIGINT)
        assert dev.wait(timeout=60) == 0, output.read_text()[-3000:]
        wait_until(lambda: not any(_alive(pid) for pid in processes), 10, message="every child gone")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing left listening on the web port
    finally:
        if dev.poll() is None:
            dev.kill()
        for pid in processes:  # left over from a failure: not to outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_mailer_dev_serves_the_dashboard_cookie_without_secure_over_its_plain_http(
    database_url: str, tmp_path: pathlib.Path
) -> None:
    import re

    import requests

    port = pgcluster.free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MAILJET_", "MAILER_"))}
    env.update(DATABASE_URL=database_url, PORT=str(port), PYTHONUNBUFFERED="1")
    output = tmp_path / "dev.log"
    with output.open("wb") as out:
        dev = subprocess.Popen([sys.executable, "-m", "mailer.cli", "dev", "--dir", str(tmp_path / "dev")],  # noqa: S603
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "API key of the dev app" in output.read_text(), 60, message="mailer dev ready")
        api_key = output.read_text().split("API key of the dev app:")[1].split()[0]
        url = f"http://127.0.0.1:{port}/dashboard/login"
        with requests.Session() as browser:
            form = browser.get(url, timeout=10)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert csrf, form.text
            login = browser.post(url, data={"token": api_key, "csrf_token": csrf.group(1)}, timeout=10,
                                 allow_redirects=False)
        assert login.status_code == 302, login.text
        cookie = login.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "Secure" not in cookie  # a browser keeps it on plain http too
        # Issue 22: it sets MAILER_PUBLIC_URL to its own address: web warns of no missing one, and bulk mail's
        # unsubscribe link, as the simulator recorded it, points at this web.
        assert "MAILER_PUBLIC_URL is not set" not in output.read_text()
        sim_url = re.search(r"the built-in simulator at (http://\S+)", output.read_text())
        assert sim_url, output.read_text()
        queued = requests.post(
            f"http://127.0.0.1:{port}/queue", headers={"Authorization": f"Bearer {api_key}"}, timeout=10,
            json={"from": {"email": "news@example.com"}, "to": [{"email": "ann@example.org"}], "subject": "News",
                  "text": "News", "priority": "bulk"},
        )
        assert queued.status_code == 202, queued.text

        def recorded() -> dict | None:
            messages = requests.get(f"{sim_url.group(1)}/_sim/sends", timeout=5).json()["messages"]
            return next((m for m in messages if m["custom_id"] == queued.json()["id"]), None)

        message = wait_until(recorded, 30, message="the bulk message at the simulator")
        assert message["headers"]["List-Unsubscribe"].startswith(f"<http://127.0.0.1:{port}/unsubscribe/")
    finally:
        children = _descendants(dev.pid)
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dev.kill()
        for pid in children:  # left over from a failure: not to outlive the test
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
