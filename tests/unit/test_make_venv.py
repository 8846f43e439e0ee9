"""scripts/make-venv: which Python the README's commands build .venv with."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "make-venv"
DISTRIBUTION_PYTHON = "/usr/bin/python3"


def make_venv(target: pathlib.Path, python: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILER_PYTHON"}
    if python is not None:
        env["MAILER_PYTHON"] = python
    return subprocess.run(  # noqa: S603  # the project's own script
        [str(SCRIPT), str(target)], env=env, capture_output=True, text=True, check=False)


def base_prefix(python: str | pathlib.Path) -> str:
    """The installation an interpreter (or a venv's) belongs to."""
    return subprocess.run(  # noqa: S603  # an interpreter the test chose
        [str(python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True, check=True,
    ).stdout.strip()


def fake_python(tmp_path: pathlib.Path, script: str) -> str:
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_mailer_python_names_the_interpreter(tmp_path):
    calls = tmp_path / "calls"
    wrapper = fake_python(tmp_path, f'echo "$@" >> {calls}\nexec {sys.executable} "$@"\n')
    made = make_venv(tmp_path / "venv", wrapper)
    assert made.returncode == 0, made.stderr
    assert "-m venv" in calls.read_text()
    assert base_prefix(tmp_path / "venv" / "bin" / "python") == sys.base_prefix


def distribution_python_can_make_a_venv() -> bool:
    """Whether /usr/bin/python3 is 3.11 or newer with the venv and ensurepip modules (python3-venv)."""
    if not shutil.which(DISTRIBUTION_PYTHON):
        return False
    probe = "import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))"
    found = subprocess.run([DISTRIBUTION_PYTHON, "-c", probe], capture_output=True, check=False)  # noqa: S603
    return found.returncode == 0


@pytest.mark.skipif(not distribution_python_can_make_a_venv(), reason="no distribution Python 3.11+ with venv")
def test_without_it_the_distributions_python_is_chosen(tmp_path):
    made = make_venv(tmp_path / "venv")
    assert made.returncode == 0, made.stderr
    assert base_prefix(tmp_path / "venv" / "bin" / "python") == base_prefix(DISTRIBUTION_PYTHON)


def test_an_interpreter_that_cannot_make_a_venv_leaves_nothing_behind(tmp_path):
    # As Debian's python3 without python3-venv: the version is fine, `-m venv` fails half-way.
    broken = fake_python(tmp_path, 'if [ "$1" = "-m" ]; then mkdir -p "$3/bin"; exit 1; fi\nexit 0\n')
    made = make_venv(tmp_path / "venv", broken)
    assert made.returncode == 1
    assert "no Python 3.11 or newer that can make a venv" in made.stderr
    assert not (tmp_path / "venv").exists()


def test_a_failed_attempt_leaves_a_folder_that_was_there_before(tmp_path):
    broken = fake_python(tmp_path, 'if [ "$1" = "-m" ]; then mkdir -p "$3/bin"; exit 1; fi\nexit 0\n')
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "notes.txt").write_text("mine")
    made = make_venv(tmp_path / "venv", broken)
    assert made.returncode == 1
    assert (tmp_path / "venv" / "notes.txt").read_text() == "mine"


def test_an_interpreter_older_than_3_11_is_refused(tmp_path):
    # Its version check fails; asked to make a venv, it would.
    old = fake_python(tmp_path, 'if [ "$1" = "-m" ]; then mkdir -p "$3/bin"; exit 0; fi\nexit 1\n')
    made = make_venv(tmp_path / "venv", old)
    assert made.returncode == 1
    assert not (tmp_path / "venv").exists()


def test_a_missing_interpreter_is_refused(tmp_path):
    made = make_venv(tmp_path / "venv", str(tmp_path / "no-such-python"))
    assert made.returncode == 1
    assert "set MAILER_PYTHON" in made.stderr
