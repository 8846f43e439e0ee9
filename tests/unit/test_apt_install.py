"""scripts/apt-install, the one place the scripts call apt-get: as root, through sudo, or a clear refusal.
apt-get and sudo are stand-ins here that only record how they were called."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "apt-install"
TOOLS = ("bash", "env", "find", "head", "id")  # what the script runs besides apt-get and sudo


@pytest.fixture
def stubs() -> Iterator[pathlib.Path]:
    """A folder for PATH: the tools the script needs, and an apt-get that logs its arguments and frontend."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="mailer-apt-"))  # not under /root: `nobody` runs it too
    folder.chmod(0o755)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    log = folder / "calls"
    log.touch(mode=0o666)
    log.chmod(0o666)
    _stub(folder / "apt-get", f'echo "apt-get $* frontend=${{DEBIAN_FRONTEND:-unset}}" >> {log}\n')
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stub(path: pathlib.Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def _run(stubs: pathlib.Path, *packages: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    command = ["env", "-i", f"PATH={stubs}", "bash", str(SCRIPT), *packages]
    if user:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603


def _calls(stubs: pathlib.Path) -> list[str]:
    return (stubs / "calls").read_text().splitlines()


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="runs as root and nobody")


@needs_root
def test_as_root_it_installs_without_questions(stubs: pathlib.Path) -> None:
    done = _run(stubs, "python3", "python3-venv")
    assert done.returncode == 0, done.stderr
    install = [call for call in _calls(stubs) if " install " in call]
    assert install == ["apt-get install -y -qq python3 python3-venv frontend=noninteractive"]


@needs_root
def test_without_root_it_goes_through_sudo_keeping_the_frontend(stubs: pathlib.Path) -> None:
    _stub(stubs / "sudo", f'echo "sudo $1" >> {stubs / "calls"}\nexec "$@"\n')
    done = _run(stubs, "chromium", user="nobody")
    assert done.returncode == 0, done.stderr
    assert "apt-get install -y -qq chromium frontend=noninteractive" in _calls(stubs)
    assert "sudo env" in _calls(stubs)  # sudo resets the environment: the frontend is set after it


@needs_root
def test_without_root_or_sudo_it_stops_and_says_what_to_run(stubs: pathlib.Path) -> None:
    refused = _run(stubs, "postgresql", user="nobody")
    assert refused.returncode == 1
    assert "run as root: apt-get update && apt-get install -y postgresql" in refused.stderr
    assert _calls(stubs) == []


def test_without_apt_get_it_names_the_packages(stubs: pathlib.Path) -> None:
    (stubs / "apt-get").unlink()
    refused = _run(stubs, "postgresql")
    assert refused.returncode == 1
    assert "no apt-get on this machine; install these yourself: postgresql" in refused.stderr
