"""Random order, replay and reruns in real rack runs (issue 9, the run loop).

The pure parts (the seeded order, the split, the sequences read back from a store) are
tested in tests/test_ordering.py; these check that a rack run keeps to them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testrack.ordering import replay_sequences
from testrack.store import SQLiteStore


def run(pytester: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=pytester.path, env=dict(os.environ, COLUMNS="200"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def sequences(path: Path) -> dict[str, tuple[str, ...]]:
    """What each worker slot ran in the newest stored run, in order."""
    store = SQLiteStore(path / ".testrack" / "results.sqlite")
    try:
        run_id = store.runs(limit=1)[0].id
        return {w: s.tests for w, s in replay_sequences(store.results(run_id)).items()}
    finally:
        store.close()


def suite(pytester: pytest.Pytester, files: int = 4, cases: int = 8) -> None:
    for k in range(files):
        body = f"import pytest\n\n@pytest.mark.parametrize('i', range({cases}))\ndef test_t(i):\n    pass\n"
        pytester.makepyfile(**{f"test_m{k}": body})


@pytest.mark.parametrize("mode", ["load", "each"])
def test_a_seed_gives_every_worker_the_same_sequence_on_every_run(pytester, write_rack, mode):
    from conftest import boards

    write_rack(boards(2), mode=mode)
    suite(pytester)
    seen = []
    for _ in range(3):
        proc = run(pytester, "-q", "--rack-seed", "1234")
        assert proc.returncode == 0, proc.stdout
        seen.append(sequences(pytester.path))
    assert seen[0] == seen[1] == seen[2]
    assert sum(len(s) for s in seen[0].values()) == (32 if mode == "load" else 64)
    collection_order = [f"test_m{k}.py::test_t[{i}]" for k in range(4) for i in range(8)]
    assert any(list(s) != [t for t in collection_order if t in s] for s in seen[0].values())


def test_the_seed_is_printed_even_under_q_and_stored_with_the_run(pytester):
    suite(pytester)
    proc = run(pytester, "-q", "--rack", "local:2", "--rack-random")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("testrack: random order, seed "))
    seed = int(line.split("seed ")[1].split(":")[0])
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    assert store.runs(limit=1)[0].seed == seed
    store.close()
    last = subprocess.run(
        [sys.executable, "-m", "testrack", "last"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"random order, seed {seed}: pytest --rack-seed {seed} runs it again" in last.stdout, last.stdout
    first = sequences(pytester.path)
    run(pytester, "-q", "--rack", "local:2", "--rack-seed", str(seed))
    assert sequences(pytester.path) == first


def test_adding_a_test_keeps_the_others_in_their_order(pytester):
    suite(pytester)
    run(pytester, "-q", "--rack", "local:2", "--rack-seed", "7")
    before = sequences(pytester.path)
    pytester.makepyfile(test_m9="def test_new():\n    pass\n")
    run(pytester, "-q", "--rack", "local:2", "--rack-seed", "7")
    after = sequences(pytester.path)
    rank = {t: (w, i) for w, s in before.items() for i, t in enumerate(s)}
    for seq in after.values():
        old = [t for t in seq if t in rank]
        same_worker = [t for t in old if rank[t][0] == rank[old[0]][0]] if old else []
        assert same_worker == sorted(same_worker, key=lambda t: rank[t][1])


def test_the_rack_file_can_ask_for_random_order(pytester):
    suite(pytester)
    pytester.path.joinpath("testrack.toml").write_text(
        'seed = 99\n\n[[devices]]\nname = "b1"\nkind = "board"\naddress = "x"\ncapacity = 2\n'
    )
    proc = run(pytester, "-q")
    assert "testrack: random order, seed 99: pytest --rack-seed 99 runs it again" in proc.stdout
    pytester.path.joinpath("testrack.toml").write_text(
        'seed = -1\n\n[[devices]]\nname = "b1"\nkind = "board"\naddress = "x"\n'
    )
    bad = run(pytester, "-q")
    assert "seed = -1 is not a seed; use a whole number from 0 to 9223372036854775807" in bad.stderr


def test_a_seed_or_option_testrack_cannot_honour_is_refused_with_the_fix(pytester):
    """A seed too large for the store ran, then lost its record (and so its replay); options
    that need another option were ignored without a word."""
    suite(pytester)
    for args, said in [
        (["--rack-seed", str(2**64)], "is not a seed; give a whole number from 0 to 9223372036854775807"),
        (["--rack-rerun-failed", "-1"], "'-1' is not a count; give a whole number >= 0"),
        (["--rack-replay-anywhere"], "--rack-replay-anywhere moves the sequences of --rack-replay RUN"),
    ]:
        proc = run(pytester, "-q", "--rack", "local:2", *args)
        assert proc.returncode == pytest.ExitCode.USAGE_ERROR, (args, proc.stdout)
        assert said in proc.stderr, (args, proc.stderr)


def test_a_replay_names_a_device_that_left_the_rack_and_anywhere_runs_its_sequence(pytester):
    suite(pytester)
    rack = pytester.path / "rack.toml"
    rack.write_text(THREE_BOARDS)
    first = run(pytester, "-q", "--rack", "rack.toml", "--rack-random")
    assert first.returncode == 0, first.stdout
    ran = sequences(pytester.path)
    rack.write_text(THREE_BOARDS.replace("board-3", "board-4"))
    refused = run(pytester, "-q", "--rack", "rack.toml", "--rack-replay", "last")
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout
    assert (
        "board-3, which is not in this rack" in refused.stderr and "--rack-replay-anywhere" in refused.stderr
    )
    anywhere = run(pytester, "-q", "--rack", "rack.toml", "--rack-replay", "1", "--rack-replay-anywhere")
    assert "32 passed" in anywhere.stdout, anywhere.stdout
    assert sorted(sequences(pytester.path).values()) == sorted(ran.values())


def test_replay_gives_each_worker_the_sequence_it_ran(pytester):
    suite(pytester)
    run(pytester, "-q", "--rack", "local:2", "--rack-random")
    ran = sequences(pytester.path)
    proc = run(pytester, "-q", "--rack", "local:2", "--rack-replay", "last")
    assert "32 passed" in proc.stdout
    assert sequences(pytester.path) == ran
    one = run(pytester, "-q", "--rack", "local:2", "--rack-replay", "1", "--rack-worker", "gw1")
    assert f"{len(ran['gw1'])} passed" in one.stdout
    assert sequences(pytester.path) == {"gw1": ran["gw1"]}
    wrong = run(pytester, "-q", "--rack", "local:2", "--rack-replay", "1", "--rack-worker", "gw7")
    assert wrong.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--rack-worker gw7: run 1 had no worker gw7; it had gw0, gw1" in wrong.stderr


FLAKY = """
    import pathlib

    def test_once_fails():
        flag = pathlib.Path("ran-before")
        if not flag.exists():
            flag.touch()
            assert 0, "the first time it fails"

    def test_always_fails():
        assert 0

    def test_fine():
        pass
"""


def test_rerun_failed_tells_flaky_from_broken(pytester):
    pytester.makepyfile(test_f=textwrap.dedent(FLAKY))
    proc = run(pytester, "-q", "-p", "no:rerunfailures", "--rack", "local:2", "--rack-rerun-failed", "2")
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("1 failed, 2 passed, 3 rerun, 1 flaky"), proc.stdout
    assert "testrack: flaky: test_f.py::test_once_fails failed on local, then passed on local" in proc.stdout
    history = subprocess.run(
        [sys.executable, "-m", "testrack", "history", "test_f.py::test_always_fails"],
        cwd=pytester.path, capture_output=True, text=True,
    )  # fmt: skip
    assert "3 results, 1 failed, 2 rerun" in history.stdout
    (pytester.path / "ran-before").unlink()
    ok = run(pytester, "-q", "-p", "no:rerunfailures", "--rack", "local:2", "--rack-rerun-failed", "2",
             "--rack-flaky-ok", "-k", "not always")  # fmt: skip
    assert ok.returncode == 0, ok.stdout


THREE_BOARDS = "".join(
    f'[[devices]]\nname = "board-{i}"\nkind = "board"\naddress = "10.0.0.{i}"\n\n' for i in (1, 2, 3)
)

ON_BOARD_2 = """
    import os

    def test_fine():
        pass

    def test_on_board_2(device):
        with open("attempts", "a") as log:
            log.write(f"{device.name} {os.getpid()}\\n")
        assert device.name != "board-2"
"""


@pytest.mark.parametrize("seeded", [False, True], ids=["dynamic", "seeded"])
def test_a_rerun_goes_to_another_device_in_random_order_too(pytester, seeded):
    """With a seed, every test's job named only its sequence's device, so a rerun went back to the
    device it failed on (here board-2, where it always fails) instead of another one."""
    pytester.makepyfile(test_f=textwrap.dedent(ON_BOARD_2))
    pytester.path.joinpath("rack.toml").write_text(THREE_BOARDS)
    args = ["-q", "-p", "no:rerunfailures", "--rack", "rack.toml", "--rack-rerun-failed", "2"]
    for attempt in range(12):  # a seed (or chance) that puts the test's first attempt on board-2
        (pytester.path / "attempts").unlink(missing_ok=True)
        order = ["--rack-seed", str(attempt)] if seeded else []
        proc = run(pytester, *args, *order, "--rack-store", "memory")
        attempts = [line.split() for line in (pytester.path / "attempts").read_text().splitlines()]
        if attempts[0][0] == "board-2":
            break
    assert attempts[0][0] == "board-2", "no run put the test on board-2 first"
    assert len(attempts) == 2 and attempts[1][0] != "board-2", attempts
    assert attempts[1][1] != attempts[0][1]  # another process
    assert "1 rerun, 1 flaky" in proc.stdout.strip().splitlines()[-1], proc.stdout
    assert "board-2: 1 rerun" in proc.stdout  # its per-device line said "no tests"


def test_pytest_randomly_s_seed_orders_the_whole_run(pytester):
    """With pytest-randomly active, its seed gives testrack's seeded order (one order for every
    worker, reproducible), while pytest-randomly reseeds random in each test."""
    suite(pytester)
    runs = []
    for _ in range(2):
        proc = run(pytester, "-p", "randomly", "--randomly-seed=5", "--rack", "local:2")
        assert "testrack: random order, seed 5 (from pytest-randomly" in proc.stdout, proc.stdout
        runs.append(sequences(pytester.path))
    assert runs[0] == runs[1]
