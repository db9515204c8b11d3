"""A real PostgreSQL server for the tests, from Debian's packages (``initdb`` + ``pg_ctl`` from
``/usr/lib/postgresql/*/bin``), in a temporary directory, started once per session.

It listens on a Unix socket in that directory and on 127.0.0.1 (a free port), so that tests
can use both kinds of URL. initdb refuses to run as root; as root (here and in CI) the server
runs as the ``postgres`` system user the Debian package creates. Unix-socket connections as
``postgres`` are trusted; every other role, and every TCP connection, needs its password
(scram-sha-256), so the password tests mean something.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "postgres"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class PgServer:
    bindir: Path
    base: Path
    port: int
    as_user: list[str]
    _names: Iterator[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, check=check, timeout=120
        )

    def url(
        self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None, tcp: bool = False
    ) -> str:
        """A libpq URL: over the Unix socket (default) or TCP on 127.0.0.1."""
        auth = user if password is None else f"{user}:{password}"
        if tcp:
            return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"
        return f"postgresql://{auth}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def start(self) -> None:
        self.run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self.run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            "60",
            "stop",
            check=False,
        )

    def restart(self, mode: str = "fast") -> None:
        """Stop (``immediate``: as if it crashed) and start again."""
        self.stop(mode)
        self.start()

    def admin(self, dbname: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=True)

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return name

    def create_role(self, name: str, password: str, *extra: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{name}"')
            conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}' {' '.join(extra)}")


def start_server(settings: str = "") -> PgServer:
    """initdb and start a server in a new temporary directory (as ``postgres`` when root);
    ``settings`` are appended to postgresql.conf. RuntimeError, with the server's log, if it fails."""
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: run sh scripts/system-packages.sh")
    base = Path(tempfile.mkdtemp(prefix="testrack-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PgServer(bindir, base, _free_port(), as_user)
    try:
        server.run(
            str(bindir / "initdb"), "-D", str(server.data), "-U", SUPERUSER, "-E", "UTF8", "--no-sync",
            "--auth=trust", "--locale=C.UTF-8",
        )  # fmt: skip
        hba = server.data / "pg_hba.conf"
        hba.write_text(
            f"local all {SUPERUSER} trust\nlocal all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {server.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{server.socket_dir}'\n{settings}\n"
            )
        server.start()
    except subprocess.CalledProcessError as exc:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from None
    return server


def stop_server(server: PgServer) -> None:
    server.stop("immediate")
    shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole session (skipped, saying how to get one, if not installed).
    fsync is off: the tests restart it, but never crash the machine under it."""
    if _bindir() is None:
        pytest.skip(
            "PostgreSQL is not installed: run sh scripts/system-packages.sh (Debian's postgresql package)"
        )
    server = start_server("fsync = off")
    yield server
    stop_server(server)


@pytest.fixture
def pg_database(postgres: PgServer) -> str:
    """The URL of a fresh, empty database (as the trusted superuser, over the Unix socket)."""
    return postgres.url(postgres.create_database())


def wait_until(predicate, timeout: float = 10.0, every: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())
