"""mypy and the layer contracts (import-linter, pyproject.toml) run inside the test suite, so the README's
test command fails on a type error or an import that climbs a layer."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
_TIMEOUT_S = 300  # mypy from a cold cache: about 3 s on an idle 2-core machine


def _mypy_cache() -> pathlib.Path:
    """mypy's incremental cache: in the venv (cleaned with it), else in the temporary directory."""
    if os.access(sys.prefix, os.W_OK):
        return pathlib.Path(sys.prefix) / "mypy_cache"
    return pathlib.Path(tempfile.gettempdir()) / f"mailer-mypy-cache-{os.getuid()}"


def _check(args: list[str]) -> None:
    result = subprocess.run(  # noqa: S603  # the checkers of the test venv
        args, cwd=REPO, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def test_mypy_finds_no_error_in_the_package() -> None:
    _check([sys.executable, "-m", "mypy", "--cache-dir", str(_mypy_cache()), "mailer"])


def test_imports_keep_the_layer_contracts() -> None:
    _check([str(BIN / "lint-imports"), "--no-cache"])
