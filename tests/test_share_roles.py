"""Roles and grants, on real PostgreSQL roles: a CI runner cannot release a person's reservation,
a person cannot release a CI run's lease, an admin can; anyone may take over a dead run's slot;
a role that may not create tables is told to ask the admin. (docs/sharing.md, Roles and grants)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from pg import PgServer
from testrack.share import DeviceSpec, Holder, HolderInfo, SchemaError, SlotKey
from testrack.share.postgres import PostgresShare
from testrack.share.processes import this_host

pytestmark = pytest.mark.timeout(300)
PASSWORD = "lab-pass"


def cli(*args: str, user: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "USER": user, "LOGNAME": user}
    env.pop("TESTRACK_SHARE", None)
    return subprocess.run(
        [sys.executable, "-m", "testrack", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
def lab(postgres: PgServer) -> dict[str, str]:
    """A database owned by a non-superuser admin who set the share up and ran roles.sql; a CI
    runner role, a second one, and a person at the bench. Returns each role's URL."""
    suffix = os.urandom(3).hex()
    names = {
        "admin": f"lab_admin_{suffix}",
        "ci": f"ci_bot_{suffix}",
        "ci2": f"ci_bot2_{suffix}",
        "alice": f"alice_{suffix}",
    }
    postgres.create_role(names["admin"], PASSWORD, "CREATEROLE")
    database = postgres.create_database("lab")
    with postgres.admin() as conn:
        conn.execute(f'ALTER DATABASE "{database}" OWNER TO {names["admin"]}')
    urls = {
        who: postgres.url(database, user=name, password=PASSWORD, tcp=True) for who, name in names.items()
    }
    share = PostgresShare(urls["admin"])  # the admin's first use creates and migrates the schema
    share.register_devices([DeviceSpec("board-1"), DeviceSpec("board-2")])
    share.close()
    import psycopg

    roles_sql = resources.files("testrack.share").joinpath("sql", "postgresql", "roles.sql").read_text()
    with psycopg.connect(urls["admin"], autocommit=True) as conn:
        conn.execute(roles_sql.encode())
    postgres.create_role(names["ci"], PASSWORD, "IN ROLE testrack_runner")
    postgres.create_role(names["ci2"], PASSWORD, "IN ROLE testrack_runner")
    postgres.create_role(names["alice"], PASSWORD, "IN ROLE testrack_bench")
    return {**urls, **{f"{who}_name": name for who, name in names.items()}}


def test_a_ci_runner_cannot_release_a_persons_reservation(lab: dict[str, str]) -> None:
    """Even with --force and the right holder named, the CI role's release is refused by the share's
    row security; the admin's is not."""
    alice = lab["alice_name"]
    reserved = cli("reserve", "board-1", "--for", "30m", "--share", lab["alice"], user=alice)
    assert reserved.returncode == 0, reserved.stderr
    refused = cli("release", "board-1", "--force", "--holder", alice, "--share", lab["ci"], user="ci")
    assert refused.returncode == 2
    assert refused.stderr == (
        f"testrack release: board-1: the database role {lab['ci_name']} may not release {alice}'s lease "
        f"(it belongs to the role {alice}); ask its holder, or an admin of the share\n"
    )
    ci = Holder(PostgresShare(lab["ci"]), HolderInfo("ci-1", this_host(), os.getpid(), "pytest"))
    assert ci.try_acquire([SlotKey("board-1")]) is None  # still reserved
    freed = cli("release", "board-1", "--force", "--holder", alice, "--share", lab["admin"], user="admin")
    assert freed.returncode == 0, freed.stderr
    assert ci.try_acquire([SlotKey("board-1")]) is not None


def test_a_person_cannot_release_a_ci_runs_lease_but_owns_their_own(lab: dict[str, str]) -> None:
    """Row security works both ways: alice cannot free the CI run's lease, and frees her own."""
    ci = Holder(PostgresShare(lab["ci"]), HolderInfo("ci-1", this_host(), os.getpid(), "nightly"))
    ci.acquire([SlotKey("board-2")])
    refused = cli(
        "release",
        "board-2",
        "--force",
        "--holder",
        "nightly",
        "--share",
        lab["alice"],
        user=lab["alice_name"],
    )
    assert refused.returncode == 2
    assert f"the database role {lab['alice_name']} may not release nightly's lease" in refused.stderr
    assert ci.heartbeat() == []  # untouched
    alice = lab["alice_name"]
    assert cli("reserve", "board-1", "--for", "90s", "--share", lab["alice"], user=alice).returncode == 0
    own = cli("release", "board-1", "--share", lab["alice"], user=alice)
    assert own.returncode == 0, own.stderr
    assert own.stdout.startswith(f"released board-1 slot 0: held by {alice} ")


def test_anyone_may_take_over_a_dead_runs_slot(
    lab: dict[str, str], postgres: PgServer, tmp_path: Path
) -> None:
    """A CI run of one role killed with SIGKILL: a run of another role gets its slot within 2 s."""
    ttl = 6.0
    with postgres.admin() as conn:
        row = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())").fetchone()
    assert row is not None
    time.sleep(max(0.0, ttl + 0.5 - float(row[0])))
    holder_script = str(Path(__file__).with_name("share_holder.py"))
    victim = subprocess.Popen(
        [sys.executable, holder_script, "hold", "--share", lab["ci2"], "--slots", "board-2:0",
         "--log", str(tmp_path / "victim.log"), "--ttl", str(ttl)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert victim.stdout is not None
        assert '"granted"' in victim.stdout.readline()
        ci = Holder(PostgresShare(lab["ci"]), HolderInfo("ci-1", this_host(), os.getpid(), "pytest"), ttl=ttl)
        assert ci.try_acquire([SlotKey("board-2")]) is None
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        ci.acquire([SlotKey("board-2")], wait=ttl)
        assert time.monotonic() - killed < 2.0
    finally:
        victim.kill()
        victim.communicate(timeout=30)


def test_a_role_that_may_not_create_tables_is_told_to_ask_the_admin(postgres: PgServer) -> None:
    """A CI role on a database nobody has set up: one message naming what the admin should run."""
    name = f"ci_fresh_{os.urandom(3).hex()}"
    postgres.create_role(name, PASSWORD)
    database = postgres.create_database("fresh")
    with postgres.admin(database) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    with pytest.raises(SchemaError) as info:
        PostgresShare(postgres.url(database, user=name, password=PASSWORD, tcp=True))
    message = str(info.value)
    assert "this database role may not create or update testrack's share tables" in message
    assert message.endswith(
        "ask the share's admin to run testrack status --share URL once as the owner of the schema testrack "
        "(see docs/sharing.md, Roles and grants)"
    )
    assert PASSWORD not in message
