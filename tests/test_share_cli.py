"""`testrack status`, `reserve` and `release` as a person at the bench runs them: real processes,
on an SQLite share and on a real PostgreSQL; passwords never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import PgServer
from testrack.share import DeviceSpec, Holder, HolderInfo, SlotKey
from testrack.share.backend import ShareBackend
from testrack.share.location import open_share, resolve
from testrack.share.processes import this_host
from testrack.share.text import clock_time

pytestmark = pytest.mark.timeout(300)


def run_cli(
    *args: str, user: str = "alice", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "USER": user, "LOGNAME": user, **(env or {})}
    environ.pop("TESTRACK_SHARE", None)
    if env and "TESTRACK_SHARE" in env:
        environ["TESTRACK_SHARE"] = env["TESTRACK_SHARE"]
    return subprocess.run(
        [sys.executable, "-m", "testrack", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def share(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ShareBackend]]:
    """A share spec and a backend on it with board-1 (1 slot) and board-2 (2 slots) registered."""
    spec = (
        str(tmp_path / "share.sqlite")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    backend = open_share(resolve(spec))
    assert backend is not None
    backend.register_devices([DeviceSpec("board-1", 1, "10.0.0.1"), DeviceSpec("board-2", 2, "10.0.0.2")])
    yield spec, backend
    backend.close()


def run_holder(backend: ShareBackend, run: str = "ci-1234", label: str = "pytest") -> Holder:
    return Holder(backend, HolderInfo(run, this_host(), os.getpid(), label))


def test_status_shows_every_device_its_holders_and_waiters(share: tuple[str, ShareBackend]) -> None:
    """status: each device and slot, who holds it (holder, run, host, pid, since), who waits."""
    spec, backend = share
    holder = run_holder(backend)
    lease = holder.acquire([SlotKey("board-2", 1)])
    waiter = run_holder(backend, run="ci-99")
    backend.request(waiter.id, [SlotKey("board-2", 1)], 0)
    backend.set_quarantine("board-1", "no answer within 5 s", "ci-77")
    result = run_cli("status", "--share", spec)
    assert result.returncode == 0, result.stderr
    host, pid = this_host(), os.getpid()
    quarantined = backend.status().devices[0].quarantine
    assert quarantined is not None
    since = clock_time(lease.grant.granted)
    assert result.stdout.splitlines()[1:] == [
        f"board-1 (1 slot) QUARANTINED since {clock_time(quarantined.at)} by run ci-77: no answer within 5 s",
        "  slot 0: free",
        "board-2 (2 slots)",
        "  slot 0: free",
        f"  slot 1: pytest (run ci-1234) on {host}, pid {pid}, since {since} (heartbeat)",
        f"  waiting: pytest (run ci-99) on {host}, priority 0, slot 1, since "
        f"{clock_time(backend.status().devices[1].waiting[0].since)}",
    ]
    data = json.loads(run_cli("status", "--share", spec, "--json").stdout)
    board2 = data["devices"][1]
    assert board2["leases"][0]["run"] == "ci-1234" and board2["leases"][0]["token"] == lease.token
    assert board2["waiting"][0]["run"] == "ci-99"
    assert data["devices"][0]["quarantine"]["reason"] == "no answer within 5 s"


def test_reserve_then_release_by_the_person(share: tuple[str, ShareBackend]) -> None:
    """reserve takes every slot for --for; runs cannot have it; only its holder releases it."""
    spec, backend = share
    result = run_cli("reserve", "board-2", "--for", "30m", "--share", spec, "--json")
    assert result.returncode == 0, result.stderr
    reserved = json.loads(result.stdout)
    assert (reserved["device"], reserved["slots"], reserved["holder"]) == ("board-2", [0, 1], "alice")
    assert reserved["until"] - reserved["since"] == pytest.approx(1800)
    run = run_holder(backend)
    assert run.try_acquire([SlotKey("board-2", 0)]) is None
    status = run_cli("status", "--share", spec).stdout
    assert f"  slot 0: alice (person reserve:alice) on {this_host()}" in status
    refused = run_cli("release", "board-2", "--share", spec, user="bob")
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "testrack release: board-2 is held by alice (alice on "
    ) and refused.stderr.rstrip().endswith(
        "not by you (bob); to free it anyway: testrack release board-2 --force --holder alice"
    )
    done = run_cli("release", "board-2", "--share", spec)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("released board-2 slot 0: held by alice (alice on ")
    assert run.try_acquire([SlotKey("board-2", 0), SlotKey("board-2", 1)]) is not None


def test_release_force_names_the_expected_holder(share: tuple[str, ShareBackend]) -> None:
    """--force frees a run's lease only when --holder names it; the run learns its lease is lost."""
    spec, backend = share
    run = run_holder(backend, label="nightly")
    lease = run.acquire([SlotKey("board-1")])
    wrong = run_cli("release", "board-1", "--force", "--holder", "weekly", "--share", spec)
    assert wrong.returncode == 2 and "not by weekly" in wrong.stderr
    missing = run_cli("release", "board-1", "--force", "--share", spec)
    assert missing.stderr == (
        "testrack release: --force needs --holder NAME: the holder testrack status shows, "
        "so that you free what you meant\n"
    )
    freed = run_cli("release", "board-1", "--force", "--holder", "nightly", "--share", spec)
    assert freed.returncode == 0, freed.stderr
    assert run.heartbeat() == [lease]
    assert "released by someone else" in str(lease.lost)


def test_a_reservation_by_hand_goes_ahead_of_waiting_runs(share: tuple[str, ShareBackend]) -> None:
    """A person who reserves while runs wait is next: the holding run is told to give the device
    back, and the reservation gets it before the runs that waited longer."""
    spec, backend = share
    holder = run_holder(backend, run="ci-1")
    lease = holder.acquire([SlotKey("board-1")])
    waiting_run = run_holder(backend, run="ci-1")  # another host of the same run: no reason to give back
    request, _ = backend.request(waiting_run.id, [SlotKey("board-1")], 0)
    assert not holder.should_give_back(lease)
    person = subprocess.Popen(
        [sys.executable, "-m", "testrack", "reserve", "board-1", "--for", "90s", "--share", spec],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "USER": "carol"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not holder.should_give_back(lease) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert holder.should_give_back(lease)
    # What the person reads while it waits names the holder. Read before the holder lets go:
    # on a busy machine the release could otherwise come before that line, which then says
    # "free: taking it" (CI saw this).
    assert person.stderr is not None
    first = person.stderr.readline()
    assert "waiting for board-1 slot 0: board-1 slot 0 held by run ci-1" in first, first
    holder.release(lease)
    out, err = person.communicate(timeout=60)
    assert person.returncode == 0, first + err
    assert out.startswith("reserved board-1 for carol until ")
    assert backend.try_grant(request) is None  # the run waits on, behind the reservation


def test_reserve_gives_up_naming_the_holder(share: tuple[str, ShareBackend]) -> None:
    """reserve --wait 0 on a held device: one line naming the holder, exit code 2."""
    spec, backend = share
    run_holder(backend, run="ci-5").acquire([SlotKey("board-1")])
    result = run_cli("reserve", "board-1", "--wait", "0", "--share", spec)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "testrack reserve: gave up after 0 s waiting for board-1 slot 0: board-1 slot 0 held by run ci-5"
    )
    assert line.endswith("; wait longer with --wait SECONDS, or see who holds what with testrack status")


def test_bad_arguments_say_what_to_give(share: tuple[str, ShareBackend]) -> None:
    """Durations, unknown devices: one line each, with the fix."""
    spec, _ = share
    bad = run_cli("reserve", "board-1", "--for", "30", "--share", spec)
    assert bad.returncode == 2
    assert "'30' is not a duration; give a number with s, m or h, for example --for 30m" in bad.stderr
    unknown = run_cli("reserve", "board-9", "--wait", "0", "--share", spec)
    assert unknown.returncode == 2
    assert "board-9 is not a device of the share" in unknown.stderr
    assert (
        "(known: board-1, board-2); a device joins the share when a run that has it in its rack starts"
        in unknown.stderr
    )


@pytest.mark.parametrize("how", ["url", "PGPASSWORD", "pgpass"])
def test_passwords_work_from_the_url_the_environment_or_pgpass_and_are_never_shown(
    how: str, postgres: PgServer, tmp_path: Path
) -> None:
    """A role with a password reaches the share over TCP whichever way libpq finds the password;
    no output, error or stored row shows it."""
    secret = "s3cr3t-Pa55"
    role = f"bench_{how.lower()}"
    postgres.create_role(role, secret)
    database = postgres.create_database()
    with postgres.admin(database) as conn:  # the admin sets the schema up (see docs/sharing.md)
        conn.execute(f'GRANT ALL ON DATABASE "{database}" TO {role}')
        conn.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
    url = postgres.url(database, user=role, password=secret if how == "url" else None, tcp=True)
    env: dict[str, str] = {}
    if how == "PGPASSWORD":
        env["PGPASSWORD"] = secret
    elif how == "pgpass":
        pgpass = tmp_path / ".pgpass"
        pgpass.write_text(f"127.0.0.1:{postgres.port}:{database}:{role}:{secret}\n")
        pgpass.chmod(0o600)
        env["PGPASSFILE"] = str(pgpass)
    ok = run_cli("status", "--share", url, env=env)
    assert ok.returncode == 0, ok.stderr
    assert secret not in ok.stdout + ok.stderr
    wrong = run_cli(
        "status", "--share", postgres.url(database, user=role, password="not-" + secret, tcp=True)
    )
    assert wrong.returncode == 2
    assert "not-" + secret not in wrong.stderr
    assert f"postgresql://{role}:***@127.0.0.1:{postgres.port}/{database}" in wrong.stderr
    assert "password authentication failed" in wrong.stderr
    with postgres.admin(database) as conn:
        dump = "\n".join(str(row) for row in conn.execute("SELECT * FROM testrack.share_holders"))
    assert secret not in dump
