"""Connecting to PostgreSQL, and the versioned schema every testrack component keeps there.

All of testrack's tables live in the schema ``testrack``; ``testrack.schema_versions`` says
which version of each component's tables (``share``, ``store``) the database holds. The first
use brings them up to date, one transaction per step, under a transaction advisory lock so that
hosts starting at once migrate once. A role that may not create tables (a CI runner, see
docs/sharing.md) gets a message naming what the admin should run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from testrack.share.errors import SchemaError, ShareUnavailable
from testrack.share.secrets import redact

if TYPE_CHECKING:
    import psycopg

#: The advisory lock class of every testrack lock (0x7e57): holders use (LOCK_CLASS, holder id),
#: migrations (LOCK_CLASS, 0).
LOCK_CLASS = 29271


def is_postgres_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def connect(url: str, purpose: str) -> psycopg.Connection[Any]:
    """An autocommit connection; ShareUnavailable (password redacted, with the fix) if none can be made."""
    try:
        import psycopg
    except ImportError:
        raise ShareUnavailable(
            f"{purpose} {redact(url)} needs psycopg (PostgreSQL's Python driver): "
            "pip install 'testrack[postgresql]'"
        ) from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="testrack")
    except psycopg.Error as exc:
        raise ShareUnavailable(
            f"cannot connect to {purpose} {redact(url)}: {first_line(exc)}; check the URL, that the server "
            "runs, and the password (PGPASSWORD or ~/.pgpass)"
        ) from None


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0]) if lines else type(exc).__name__


def migrate(conn: psycopg.Connection[Any], component: str, steps: Sequence[str], where: str) -> None:
    """Bring ``component``'s tables up to ``len(steps)``; SchemaError if that cannot be done here."""
    import psycopg

    target = len(steps)
    try:
        version = _version(conn, component)
    except psycopg.errors.UndefinedTable:
        version = 0
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _no_rights(where, component, first_line(exc)) from None
    if version > target:
        raise SchemaError(
            f"{where}: its {component} tables are from a newer testrack (schema v{version}; this one "
            f"knows up to v{target}); upgrade testrack on this host"
        )
    if version == target:
        return
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS testrack")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS testrack.schema_versions "
                "(component text PRIMARY KEY, version integer NOT NULL)"
            )
            version = _version(conn, component)  # another host may have migrated meanwhile
            for step in steps[version:]:
                conn.execute(step.encode())  # a script: several statements, no parameters
            conn.execute(
                "INSERT INTO testrack.schema_versions (component, version) VALUES (%s, %s) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, target),
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _no_rights(where, component, first_line(exc)) from None


def _version(conn: psycopg.Connection[Any], component: str) -> int:
    row = conn.execute(
        "SELECT version FROM testrack.schema_versions WHERE component = %s", (component,)
    ).fetchone()
    return int(row[0]) if row else 0


def _no_rights(where: str, component: str, why: str) -> SchemaError:
    return SchemaError(
        f"{where}: this database role may not create or update testrack's {component} tables ({why}); "
        "ask the share's admin to run testrack status --share URL once as the owner of the schema "
        "testrack (see docs/sharing.md, Roles and grants)"
    )
