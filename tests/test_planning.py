"""Planning without processes: collected tests + rack + history -> routed, estimated jobs."""

from __future__ import annotations

from testrack import messages as m
from testrack.planning import TestInfo, plan_imports, plan_jobs
from testrack.rack import Device, Rack
from testrack.scheduling import Job, Slot

RACK = Rack(
    (Device("b1", "board", "a", attrs={"rev": "C"}), Device("b2", "board", "b"), Device("p1", "phone", "c")),
    source="lab.toml",
)


def info(nodeid: str, index: int, *requirements, error: str | None = None) -> TestInfo:
    test = m.CollectedTest(nodeid, ("t.py", 1, nodeid), tuple(requirements), error)
    return TestInfo(test, "/t.py", index)


EVERYWHERE = {"b1", "b2", "p1"}


def test_load_mode_gives_one_job_per_test_for_its_matching_devices() -> None:
    """Load: one job per test, eligible on every matching device, queued for its file's importer."""
    tests = [info("t.py::a", 0), info("t.py::b", 1, (("kind", ("board",)),))]
    plan = plan_jobs(tests, {}, RACK, "load", {}, {"/t.py": "gw0"})
    (jobs,) = plan.jobs.values()
    assert list(plan.jobs) == ["gw0"]
    assert [(j.nodeid, sorted(j.eligible)) for j in jobs] == [
        ("t.py::a", ["b1", "b2", "p1"]),
        ("t.py::b", ["b1", "b2"]),
    ]
    assert plan.runs == 2 and not plan.unrunnable


def test_each_mode_gives_one_job_per_device_that_collected_the_test() -> None:
    """Each: a job per matching device, and only where the test was collected."""
    tests = [info("t.py::a", 0)]
    plan = plan_jobs(tests, {"t.py::a": {"b1", "p1"}, "t.py::b": {"b2"}}, RACK, "each", {}, {})
    assert sorted(next(iter(j.eligible)) for j in plan.jobs[None]) == ["b1", "p1"]
    assert plan.runs == 2


def test_each_mode_plans_runs_for_a_device_that_collected_nothing() -> None:
    """A device quarantined before its worker collected still owes its runs: they are planned
    (and then reported as not run), never silently dropped."""
    plan = plan_jobs([info("t.py::a", 0)], {"t.py::a": {"b1", "p1"}}, RACK, "each", {}, {})
    assert sorted(next(iter(j.eligible)) for j in plan.jobs[None]) == ["b1", "b2", "p1"]


def test_estimates_come_from_history_and_unknown_tests_are_marked_guessed() -> None:
    """A test with history gets its own estimate; one without is estimated and marked guessed."""
    tests = [info("t.py::a", 0), info("t.py::b", 1)]
    plan = plan_jobs(tests, {}, RACK, "load", {"t.py::a": 2.5}, {})
    a, b = plan.jobs[None]
    assert (a.estimate, a.guessed) == (2.5, False)
    assert b.guessed and b.estimate == 2.5  # the module's median stands in


def test_tests_that_cannot_run_say_why() -> None:
    """A bad marker, a requirement no device meets, and a rerun whose device left, each with its text."""
    tests = [
        info("t.py::bad", 0, error="values must be strings"),
        info("t.py::gpu", 1, (("kind", ("gpu",)),)),
        info("t.py::gone", 2),
    ]
    plan = plan_jobs(tests, {}, RACK, "load", {}, {}, rerun={"t.py::gone": {"b9"}})
    reasons = {i.test.nodeid: text for i, text in plan.unrunnable}
    assert reasons["t.py::bad"] == "values must be strings"
    assert reasons["t.py::gpu"].startswith("no device in the rack can run this test: it needs kind='gpu'")
    assert "failed last time on b9" in reasons["t.py::gone"]
    assert plan.jobs == {}


def test_rerun_goes_to_the_devices_it_failed_on_unless_anywhere() -> None:
    """--rack-failed narrows a test to where it failed; --rack-failed-anywhere does not."""
    tests = [info("t.py::a", 0)]
    narrow = plan_jobs(tests, {}, RACK, "load", {}, {}, rerun={"t.py::a": {"b2"}})
    assert narrow.jobs[None][0].eligible == frozenset({"b2"})
    wide = plan_jobs(tests, {}, RACK, "load", {}, {}, rerun={"t.py::a": {"b2"}}, rerun_anywhere=True)
    assert wide.jobs[None][0].eligible == frozenset(EVERYWHERE)


# -- which worker imports which file before its first test ------------------------------------------


def _jobs(module: str, count: int, estimate: float, eligible: frozenset[str] = frozenset({"d"})) -> list[Job]:
    return [Job(f"{module}::t{i}", module, i, eligible, estimate) for i in range(count)]


SLOTS4 = [Slot(f"gw{i}", "d") for i in range(4)]


def test_cheap_files_are_imported_by_every_slot_that_may_run_them() -> None:
    """A file that imports in a few milliseconds goes everywhere: balance is worth more."""
    jobs = _jobs("a", 10, 1.0) + _jobs("b", 10, 0.1)
    plan = plan_imports(jobs, SLOTS4, {"a": 0.001, "b": 0.002}, {"a": "gw0", "b": "gw1"})
    assert plan == {f"gw{i}": ["a", "b"] for i in range(4)}


def test_dear_files_go_to_as_many_slots_as_their_share_of_the_work_needs() -> None:
    """W4-like: slow imports, little work each: every file once, on its home, spread evenly."""
    jobs = [j for k in range(8) for j in _jobs(f"m{k}", 10, 0.001)]
    home = {f"m{k}": f"gw{k % 2}" for k in range(8)}
    plan = plan_imports(jobs, SLOTS4[:2], {f"m{k}": 0.02 for k in range(8)}, home)
    assert plan == {"gw0": ["m0", "m2", "m4", "m6"], "gw1": ["m1", "m3", "m5", "m7"]}


def test_a_big_file_is_shared_by_the_slots_its_work_needs() -> None:
    """W6-like: one file holds most of the work: several slots import it, least loaded first."""
    jobs = _jobs("big", 60, 1.0) + _jobs("s1", 10, 1.0) + _jobs("s2", 10, 1.0)
    plan = plan_imports(jobs, SLOTS4, {"big": 0.05, "s1": 0.05, "s2": 0.05}, {"big": "gw2"})
    importers = sorted(slot for slot, modules in plan.items() if "big" in modules)
    assert importers == ["gw0", "gw1", "gw2", "gw3"]  # 60 s of 80: 3 slots' share * 1.5 > 4
    assert sum("s1" in m for m in plan.values()) == 1 and sum("s2" in m for m in plan.values()) == 1


def test_a_worker_that_collected_many_files_keeps_its_share_and_every_slot_gets_one() -> None:
    """W6's shape: 40 equal files, 64 slots, the first workers up collected most files. Each
    home keeps what fits its share; every slot imports a file (22 had none before)."""
    slots = [Slot(f"gw{i}", "d") for i in range(64)]
    jobs = [j for k in range(40) for j in _jobs(f"m{k:02d}", 50, 0.01)]
    costs = {f"m{k:02d}": 0.03 for k in range(40)}
    crowded = {f"m{k:02d}": f"gw{min(k // 4, 9)}" for k in range(40)}  # gw0-gw9 found them all
    plan = plan_imports(jobs, slots, costs, crowded)
    assert all(plan[s.id] for s in slots)
    assert all(len(modules) <= 2 for modules in plan.values())
    assert all(sum(m in modules for modules in plan.values()) == 2 for m in costs)
    spread = {f"m{k:02d}": f"gw{k}" for k in range(40)}  # one file each: all homes keep theirs
    plan = plan_imports(jobs, slots, costs, spread)
    assert all(m in plan[home] for m, home in spread.items())
    assert sum(len(modules) for modules in plan.values()) == 80 and all(plan[s.id] for s in slots)


def test_only_slots_of_devices_that_may_run_a_file_import_it() -> None:
    """Routing: a phone-only file is imported by phone slots only."""
    slots = [Slot("gw0", "board"), Slot("gw1", "phone")]
    jobs = _jobs("p", 5, 1.0, frozenset({"phone"})) + _jobs("b", 5, 1.0, frozenset({"board"}))
    plan = plan_imports(jobs, slots, {"p": 0.5, "b": 0.5}, {"p": "gw0", "b": "gw0"})
    assert plan == {"gw0": ["b"], "gw1": ["p"]}


def test_rerun_runs_a_test_on_every_device_it_is_failing_on_in_either_mode() -> None:
    """--rack-failed: one job per failing device, in load mode too; gone devices are left out."""
    tests = [info("t.py::a", 0)]
    failing = {"t.py::a": {"b1", "p1", "gone"}}
    load = plan_jobs(tests, {}, RACK, "load", {}, {"/t.py": "gw0"}, rerun=failing)
    assert sorted(sorted(j.eligible) for j in load.jobs["gw0"]) == [["b1"], ["p1"]]
    assert load.runs == 2
    each = plan_jobs(tests, {"t.py::a": EVERYWHERE}, RACK, "each", {}, {}, rerun=failing)
    assert sorted(sorted(j.eligible) for j in each.jobs[None]) == [["b1"], ["p1"]]
    anywhere = plan_jobs(tests, {}, RACK, "load", {}, {}, rerun=failing, rerun_anywhere=True)
    assert [j.eligible for j in anywhere.jobs[None]] == [frozenset(EVERYWHERE)]
