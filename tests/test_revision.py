"""The code revision of a run: computed from a real git tree, stored with the run, migrated in."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from testrack.recorder import Recorder
from testrack.revision import DIRTY, code_revision, is_dirty, revision_from_status, short
from testrack.store import ImportCost, MemoryStore, Result, RunInfo, SQLiteStore
from testrack.store.sqlite import MIGRATIONS, SCHEMA_VERSION


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git work tree with one commit holding two files."""
    git(tmp_path, "init", "-q")
    (tmp_path / "test_a.py").write_text("def test_a():\n    pass\n")
    (tmp_path / "conftest.py").write_text("")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_a_clean_tree_is_its_commit(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert code_revision(repo) == head
    sub = repo / "sub"
    sub.mkdir()
    assert code_revision(sub) == head
    assert not is_dirty(head)


def test_a_dirty_tree_is_its_own_revision_and_the_same_changes_give_the_same_one(repo: Path) -> None:
    """commit + hash of the changes: equal changes, equal revisions; other changes, another."""
    head = git(repo, "rev-parse", "HEAD")
    (repo / "test_a.py").write_text("def test_a():\n    assert False\n")
    first = code_revision(repo)
    assert first is not None and first.startswith(head + DIRTY) and is_dirty(first)
    assert len(first) == 40 + len(DIRTY) + 12
    assert code_revision(repo) == first
    (repo / "test_a.py").write_text("def test_a():\n    assert 0\n")
    second = code_revision(repo)
    assert second != first and second is not None and second.startswith(head + DIRTY)
    (repo / "test_a.py").write_text("def test_a():\n    assert False\n")
    assert code_revision(repo) == first
    git(repo, "add", "test_a.py")  # staged or not, the same changes are the same revision
    assert code_revision(repo) is not None and is_dirty(code_revision(repo))


def test_untracked_files_do_not_change_the_revision(repo: Path) -> None:
    """A results store or a build directory nobody ignored must not make each run a new revision."""
    head = git(repo, "rev-parse", "HEAD")
    (repo / ".testrack").mkdir()
    (repo / ".testrack" / "results.sqlite").write_bytes(b"anything")
    (repo / "notes.txt").write_text("scratch")
    assert code_revision(repo) == head
    git(repo, "add", "-f", ".testrack/results.sqlite")  # committed by mistake: still not code
    git(repo, "commit", "-q", "-m", "oops")
    head = git(repo, "rev-parse", "HEAD")
    (repo / ".testrack" / "results.sqlite").write_bytes(b"the next run")
    assert code_revision(repo) == head


def test_deleted_and_renamed_files_make_the_tree_dirty(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    (repo / "conftest.py").unlink()
    deleted = code_revision(repo)
    assert deleted is not None and deleted.startswith(head + DIRTY)
    git(repo, "checkout", "-q", "--", "conftest.py")
    git(repo, "mv", "test_a.py", "test b.py")  # a rename, and a path with a space
    renamed = code_revision(repo)
    assert renamed is not None and renamed.startswith(head + DIRTY) and renamed != deleted


def test_no_git_no_commit_no_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside git, before the first commit, or without git installed: None, never an error."""
    outside = tmp_path / "plain"
    outside.mkdir()
    assert code_revision(outside) is None
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    (fresh / "a.py").write_text("")
    git(fresh, "add", "a.py")
    assert code_revision(fresh) is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert code_revision(tmp_path) is None


def test_status_output_is_read_field_by_field() -> None:
    """Porcelain v2 with -z: ordinary, renamed and unmerged entries; no tree to read files from."""
    head = "a" * 40
    clean = b"# branch.oid " + head.encode() + b"\0# branch.head main\0"
    assert revision_from_status(clean, None) == head
    changed = clean + b"1 .M N... 100644 100644 100644 " + b"1" * 40 + b" " + b"2" * 40 + b" x y.py\0"
    renamed = (
        clean + b"2 R. N... 100644 100644 100644 " + b"1" * 40 + b" " + b"1" * 40 + b" R100 new.py\0old.py\0"
    )
    one, two = revision_from_status(changed, None), revision_from_status(renamed, None)
    assert one and two and one != two and one.startswith(head + DIRTY)
    assert revision_from_status(b"# branch.oid (initial)\0", None) is None
    assert short(one) == head[:12] + one[40:]
    assert short(None) == "(no revision)"


def test_the_revision_is_stored_with_the_run_on_both_backends(tmp_path: Path) -> None:
    for store in (MemoryStore(), SQLiteStore(tmp_path / "results.sqlite")):
        run = store.begin_run(RunInfo("u", 1.0, "load", "r", "c", revision="abc-dirty-123"))
        plain = store.begin_run(RunInfo("v", 2.0, "load", "r", "c"))
        revisions = {r.id: r.revision for r in store.runs()}
        assert revisions == {run: "abc-dirty-123", plain: None}
        store.add_results(run, [Result("t.py::a", "local", "gw0", "passed", 0.1, 1.0, 1.1)])
        assert [r.revision for r, _ in store.history("t.py::a", 5)] == ["abc-dirty-123"]
        store.close()


def test_imports_of_one_run_come_back_in_the_order_they_were_recorded(tmp_path: Path) -> None:
    for store in (MemoryStore(), SQLiteStore(tmp_path / "imports.sqlite")):
        run = store.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
        other = store.begin_run(RunInfo("v", 1.0, "load", "r", "c"))
        rows = [ImportCost(f"/p/test_{c}.py", "gw0", "local", 0.1) for c in "zya"]
        store.add_imports(run, rows[:2])
        store.add_imports(other, [ImportCost("/p/other.py", "gw0", "local", 0.1)])
        store.add_imports(run, rows[2:])
        assert store.imports(run) == rows
        store.close()


def test_a_store_from_before_revisions_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    for step in MIGRATIONS[:-1]:
        for statement in step:
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    db.execute("INSERT INTO runs (uid, started, mode, rack, command) VALUES ('old', 1.0, 'load', 'r', 'c')")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    (run,) = store.runs()
    assert (run.uid, run.revision) == ("old", None)
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_the_recorder_looks_the_revision_up_when_the_run_brings_none(repo: Path) -> None:
    recorder = Recorder.open("memory", repo)
    recorder.begin(RunInfo("u", 1.0, "load", "r", "c"))
    assert recorder.store is not None
    (run,) = recorder.store.runs()
    assert run.revision == git(repo, "rev-parse", "HEAD")
    given = Recorder.open("memory", repo)
    given.begin(RunInfo("v", 1.0, "load", "r", "c", revision="given"))
    assert given.store is not None and given.store.runs()[0].revision == "given"


def test_a_rack_run_in_a_git_tree_records_its_commit(pytester: pytest.Pytester) -> None:
    """A real run: the store's run carries the commit the tree was at."""
    pytester.makepyfile(test_r="def test_r():\n    pass\n")
    git(pytester.path, "init", "-q")
    git(pytester.path, "add", ".")
    git(pytester.path, "commit", "-q", "-m", "one")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack", "local:1").assert_outcomes(passed=1)
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    assert [r.revision for r in store.runs()] == [git(pytester.path, "rev-parse", "HEAD")]
    store.close()
