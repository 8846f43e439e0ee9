"""Named queries loaded from sql/queries/*.sql (`-- name --`, a comment line, the SQL)."""

from __future__ import annotations

import functools
import pathlib
import re
from importlib import resources


def _sql_dir() -> pathlib.Path:
    """The repository's sql/, or mailer/sql in an installed wheel: pyproject.toml maps one to the other."""
    found = resources.files("mailer.sql")
    if not isinstance(found, pathlib.Path):  # a zipped install, which pip never makes
        raise RuntimeError(f"mailer's SQL files must be on disk, found {found!r}")
    return found


SQL_DIR = _sql_dir()
_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


@functools.cache
def all_queries() -> dict[str, str]:
    """Every named query in sql/queries, by name."""
    queries: dict[str, str] = {}
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        parts = _HEADER.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise ValueError(f"query {name} is defined twice (in {path.name})")
            queries[name] = body.strip()
    return queries


def query(name: str) -> str:
    """The SQL of one named query."""
    return all_queries()[name]
