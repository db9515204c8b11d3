"""The results store on PostgreSQL, as users reach it: ``--rack-store postgresql://...`` for a
run, ``--store postgresql://...`` for the ``testrack`` commands, on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import boards
from test_history import FLAKY_ON_BOARD_2, run_testrack

pytestmark = pytest.mark.usefixtures("write_rack")


def test_a_run_records_into_the_database_and_the_commands_read_it(
    pytester: pytest.Pytester, write_rack, pg_database: str
) -> None:
    """No SQLite file is made; `last`, `failing` and `history` read the runs from the database,
    and --rack-failed reruns from it what failed."""
    write_rack(boards(3), mode="each")
    pytester.makepyfile(test_rec=FLAKY_ON_BOARD_2)
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-store", pg_database)
    first.assert_outcomes(passed=8, failed=1)
    assert not (pytester.path / ".testrack" / "results.sqlite").exists()

    out = run_testrack(pytester.path, "last", "--store", pg_database, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["devices"]["board-2"] == {"failed": 1, "passed": 2}

    failing = run_testrack(pytester.path, "failing", "--store", pg_database)
    assert failing.returncode == 1, failing.stderr
    assert "test_rec.py::test_board_2_breaks" in failing.stdout and "board-2" in failing.stdout

    rerun = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rack-store", pg_database, "--rack-failed"
    )
    rerun.assert_outcomes(failed=1, deselected=2)

    history = run_testrack(
        pytester.path, "history", "test_rec.py::test_board_2_breaks", "--store", pg_database
    )
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines()[0] == "test_rec.py::test_board_2_breaks: 4 results, 2 failed, 2 passed"


def test_an_unreachable_database_store_costs_the_record_not_the_run(
    pytester: pytest.Pytester, write_rack, postgres
) -> None:
    """A wrong password: the tests run and pass; one line says the run is not recorded, with the
    store named and the password masked."""
    write_rack(boards(2))
    pytester.makepyfile(test_ok="def test_a(device):\n    pass\n")
    postgres.create_role("runner", "right-one")
    url = postgres.url("postgres", user="runner", password="wrong-one", tcp=True)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-store", url)
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    text = result.stdout.str() + result.stderr.str()
    assert "wrong-one" not in text
    result.stdout.fnmatch_lines(
        [f"*cannot connect to the results store postgresql://runner:***@127.0.0.1:{postgres.port}/postgres*"
         "this run is not recorded*"]
    )  # fmt: skip


def test_a_wrong_store_url_for_a_command_is_one_line(tmp_path: Path, postgres) -> None:
    """`testrack last --store URL` on a database that does not answer: one line, no traceback."""
    url = postgres.url("no_such_database")
    out = run_testrack(tmp_path, "last", "--store", url)
    assert out.returncode == 2
    assert out.stderr.startswith("testrack last: cannot connect to the results store"), out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
