"""The share's SQL, by name: ``<dialect>/queries.sql`` holds ``-- name: <query>`` blocks and
``<dialect>/migrations/NNNN_*.sql`` the schema steps, applied in order, one version each.

A reviewer reads the whole database contract of a backend in those files (the layout follows
procrastinate's ``sql/queries.sql`` and ``sql/migrations``).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.M)


@functools.cache
def queries(package: str, dialect: str) -> dict[str, str]:
    """Every named query of ``package``'s ``sql/<dialect>/queries.sql``."""
    text = resources.files(package).joinpath("sql", dialect, "queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"{package} sql/{dialect}/queries.sql: query {name!r} is defined twice")
        found[name] = body.strip().rstrip(";")
    return found


@functools.cache
def migrations(package: str, dialect: str) -> tuple[str, ...]:
    """The schema steps of ``package``'s ``sql/<dialect>/migrations``: step i takes version i to i + 1."""
    folder = resources.files(package).joinpath("sql", dialect, "migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    for number, file in enumerate(files, start=1):
        if not file.name.startswith(f"{number:04d}_"):
            raise ValueError(
                f"{package} sql/{dialect}/migrations: expected {number:04d}_*.sql, found {file.name}"
            )
    return tuple(f.read_text(encoding="utf-8") for f in files)
