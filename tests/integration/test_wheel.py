"""`pip install .` (not editable) gives a working `mailer`: the wheel carries sql/ and every module and
template, and its `mailer db migrate` builds the schema from a directory outside the repository."""

from __future__ import annotations

import os
import pathlib
import shutil
import site
import subprocess
import sys
import zipfile
from collections.abc import Iterator

import psycopg
import pytest

from mailer import pgcluster

REPO = pathlib.Path(__file__).resolve().parents[2]
_TIMEOUT_S = 120  # each step; the whole test takes a few seconds on an idle machine


def _run(
    args: list[str], cwd: pathlib.Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)  # noqa: S603
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """mailer's wheel, built offline (setuptools from the test venv) from a copy of the source tree."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy2(REPO / "pyproject.toml", source)
    for folder in ("mailer", "sql"):  # what pyproject.toml packages; a copy keeps build/ out of the repo
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(out), str(source)])
    (built,) = out.glob("mailer-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A fresh venv with the wheel installed; it borrows the test venv's dependencies but not its mailer."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = pathlib.Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                           .stdout.strip())
    # A path line in a .pth adds the directory but runs none of its own .pth files, so the test venv's
    # editable finder (a .pth hook) is never installed there: `import mailer` can only find the wheel's.
    (purelib / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)])
    return venv


@pytest.fixture
def empty_database(pg_cluster: pgcluster.Cluster) -> Iterator[str]:
    """A database with no schema at all, dropped afterwards."""
    name = f"mailer_wheel_{os.getpid()}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_cluster.url(name)
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_the_wheel_carries_every_module_template_and_sql_file(wheel: pathlib.Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(path.relative_to(REPO)) for path in (REPO / "mailer").rglob("*")
                if path.is_file() and "__pycache__" not in path.parts}
    expected |= {"mailer/" + str(path.relative_to(REPO)) for path in (REPO / "sql").rglob("*")
                 if path.is_file() and "__pycache__" not in path.parts}
    assert "mailer/sql/migrations/0001_core.sql" in expected
    assert expected - names == set()


def test_installed_mailer_migrates_an_empty_database_from_outside_the_repo(
    installed: pathlib.Path, empty_database: str, tmp_path: pathlib.Path
) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["DATABASE_URL"] = empty_database
    python = str(installed / "bin" / "python")
    where = _run([python, "-c", "import mailer, mailer.store.queries as q; print(mailer.__file__); print(q.SQL_DIR)"],
                 cwd=tmp_path, env=env).stdout.split()
    assert all(pathlib.Path(path).is_relative_to(installed) for path in where), where
    migrated = _run([str(installed / "bin" / "mailer"), "db", "migrate"], cwd=tmp_path, env=env)
    assert "0001_core" in migrated.stdout, migrated.stdout
    with psycopg.connect(empty_database) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        newest = sorted((REPO / "sql" / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))[-1].stem
        recorded = conn.execute("SELECT count(*) FROM mailer_migrations WHERE name = %s", (newest,)).fetchone()
    assert {"jobs", "recipients", "mailer_migrations", "procrastinate_jobs"} <= tables, tables
    assert recorded == (1,)
