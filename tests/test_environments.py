"""Environments as resources (``[[environments]]``): real virtualenvs built with uv, real
workers spawned with their interpreters, one matrix over them.

The environments differ by one real dependency, idna 2 against idna 3, and the suite's tests
differ by it. Built environments are shared by these tests through one cache directory.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testrack.store import SQLiteStore

pytestmark = pytest.mark.timeout(600)

TWO_ENVIRONMENTS = """
[[environments]]
name = "idna2"
dependencies = ["idna==2.10"]

[[environments]]
name = "idna3"
dependencies = ["idna==3.7"]
"""

SUITE = """
import idna

def test_runs_in_an_environment(device):
    assert device.kind == "environment"

def test_needs_idna_3():
    assert idna.__version__.startswith("3."), idna.__version__

if idna.__version__.startswith("3."):
    def test_only_in_idna_3():
        pass
"""


@pytest.fixture(scope="session")
def envs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of built environments for every test here (a build takes seconds)."""
    return tmp_path_factory.mktemp("envs")


def run(pytester: pytest.Pytester, envs_dir: Path, *args: str, env: dict[str, str] | None = None):
    for name, value in (env or {}).items():
        pytester._monkeypatch.setenv(name, value)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--rack-envs-dir={envs_dir}", *args)


def test_each_mode_gives_the_matrix_over_environments_and_stores_what_they_are(
    pytester: pytest.Pytester, envs_dir: Path
) -> None:
    """Each mode is the default over environments: every test in both, a test that fails in one
    only, a test one environment does not define shown as not collected there (not a failure);
    the store and `testrack last` say which interpreter and which packages each result ran with."""
    pytester.makefile(".toml", testrack=TWO_ENVIRONMENTS)
    pytester.makepyfile(test_env=SUITE)
    result = run(pytester, envs_dir, "-p", "no:randomly")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*testrack: each mode, results per device (2 devices)*",
            "test *idna2*idna3",
            "test_env.py::test_needs_idna_3 *failed*passed",
            "test_env.py::test_only_in_idna_3 *not collected*passed",
            "idna2: FAILED - 1 failed, 1 passed",
            "idna3: ok - 3 passed",
        ]
    )
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    (stored,) = store.runs()
    records = store.environments(stored.id)
    assert [(r.name, r.implementation, r.version) for r in records] == [
        ("idna2", platform.python_implementation(), platform.python_version()),
        ("idna3", platform.python_implementation(), platform.python_version()),
    ]
    assert records[0].installed != records[1].installed  # different packages, different hashes
    # the report's summary names each environment's interpreter and packages by its device line
    from testrack.report.model import build

    summary = build(store, stored).summary()
    version = f"{platform.python_implementation()} {platform.python_version()}"
    assert [(d["name"], d["environment"]) for d in summary["devices"]] == [
        (r.name, f"{version}, packages {r.installed}") for r in records
    ]
    store.close()
    last = subprocess.run(
        [sys.executable, "-m", "testrack", "last", "--json"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
    )
    data = json.loads(last.stdout)
    assert data["environments"]["idna3"]["installed"] == records[1].installed
    # testrack history: each result with the interpreter and the packages that ran it
    history = subprocess.run(
        [sys.executable, "-m", "testrack", "history", "test_env.py::test_needs_idna_3"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
    )
    assert history.returncode == 0, history.stderr
    version = f"{platform.python_implementation()} {platform.python_version()}"
    for record, outcome in zip(records, ("failed", "passed"), strict=True):
        assert re.search(
            rf"^run +1 .* {record.name} +{outcome} .* \({version}, packages {record.installed}\)$",
            history.stdout,
            re.MULTILINE,
        ), history.stdout


def test_a_second_run_builds_nothing(pytester: pytest.Pytester, envs_dir: Path) -> None:
    """The cache: the same definitions reuse the built environments (nothing is said about a
    build, nothing in them changes); changing one's dependencies builds that one only."""
    pytester.makefile(".toml", testrack=TWO_ENVIRONMENTS)
    pytester.makepyfile(test_env=SUITE)
    run(pytester, envs_dir, "-p", "no:randomly")  # built here, or by the test before
    before = {p.name: p.stat().st_mtime_ns for p in envs_dir.iterdir()}
    again = run(pytester, envs_dir, "-p", "no:randomly")
    again.assert_outcomes(passed=4, failed=1)
    assert "building environment" not in again.stderr.str()
    assert {p.name: p.stat().st_mtime_ns for p in envs_dir.iterdir()} == before
    pytester.makefile(".toml", testrack=TWO_ENVIRONMENTS.replace("idna==3.7", "idna==3.6"))
    changed = run(pytester, envs_dir, "-p", "no:randomly")
    changed.assert_outcomes(passed=4, failed=1)
    changed.stderr.fnmatch_lines(["testrack: building environment idna3 *"])
    assert "building environment idna2" not in changed.stderr.str()


def test_load_mode_spreads_tests_over_environments_only_when_asked(
    pytester: pytest.Pytester, envs_dir: Path
) -> None:
    """--rack-mode load: each test runs once, in either environment (they are then equivalent
    by the user's say-so)."""
    pytester.makefile(".toml", testrack=TWO_ENVIRONMENTS)
    pytester.makepyfile(test_same="def test_a(device):\n    pass\n\ndef test_b(device):\n    pass\n")
    result = run(pytester, envs_dir, "--rack-mode", "load", "-v", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_a_package_that_does_not_exist_names_the_environment_and_the_package(
    pytester: pytest.Pytester, envs_dir: Path
) -> None:
    pytester.makefile(
        ".toml",
        testrack='[[environments]]\nname = "broken"\ndependencies = ["no-such-package-testrack-x==1.0"]\n',
    )
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = run(pytester, envs_dir)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    assert "environment broken: uv could not install its packages" in text
    assert "no-such-package-testrack-x" in text and "Traceback" not in text


def test_a_missing_interpreter_is_left_out_locally_and_fails_under_ci(
    pytester: pytest.Pytester, envs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locally the environment is left out with a note in the run's output; with CI set, or
    --rack-envs-missing=fail, the run fails before any test, saying which rule applied."""
    pytester.makefile(
        ".toml",
        testrack='[[environments]]\nname = "here"\n\n[[environments]]\nname = "future"\npython = "3.99"\n',
    )
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    monkeypatch.delenv("CI", raising=False)
    local = run(pytester, envs_dir)
    local.assert_outcomes(passed=1)
    local.stdout.fnmatch_lines(
        ["*environment future: no Python 3.99 on this machine*its tests were not run*"]
    )
    ci = run(pytester, envs_dir, env={"CI": "true"})
    assert ci.ret == pytest.ExitCode.USAGE_ERROR
    assert "(CI is set: a missing interpreter fails the run" in ci.stderr.str()
    asked = run(pytester, envs_dir, "--rack-envs-missing", "fail", env={"CI": "0"})
    assert asked.ret == pytest.ExitCode.USAGE_ERROR
    assert "(--rack-envs-missing=fail: a missing interpreter fails the run" in asked.stderr.str()


def test_an_interpreter_too_old_for_pytest_is_refused_with_the_versions_needed(
    pytester: pytest.Pytester, envs_dir: Path
) -> None:
    """Debian's pypy3 is Python 3.9 (scripts/system-packages.sh installs it)."""
    pypy = shutil.which("pypy3")
    assert pypy is not None, "pypy3 is missing: run sh scripts/system-packages.sh"
    pytester.makefile(".toml", testrack='[[environments]]\nname = "old"\npython = "pypy3"\n')
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = run(pytester, envs_dir)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    assert f"environment old: {os.path.realpath(pypy)}" in text or f"environment old: {pypy}" in text
    assert "is PyPy 3.9" in text and "too old" in text
    assert "pytest" in text and "needs Python >=3.10" in text


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "a"\nslots = 0', "environment #1 (a): slots = 0 is not a number of workers"),
        (
            'name = "a"\ndeps = ["x"]',
            "environment #1 (a): unknown field 'deps'; an environment has name, python",
        ),
        ('name = "a"\ndependencies = "x"', "environment #1 (a): dependencies must be a list of strings"),
        ('name = "a"\nrequirements = "nope.txt"', "environment #1 (a): requirements file"),
    ],
)
def test_a_bad_environment_entry_names_the_file_the_entry_and_the_fix(
    pytester: pytest.Pytester, envs_dir: Path, table: str, message: str
) -> None:
    pytester.makefile(".toml", testrack=f"[[environments]]\n{table}\n")
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = run(pytester, envs_dir)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"{pytester.path / 'testrack.toml'}: {message}" in result.stderr.str()


DEVICES_IN_ENVIRONMENTS = (
    TWO_ENVIRONMENTS
    + """
[[devices]]
name = "board-old"
kind = "board"
address = "127.0.0.11:1"
environment = "idna2"

[[devices]]
name = "board-new"
kind = "board"
address = "127.0.0.12:1"
environment = "idna3"
"""
)

DEVICE_SUITE = """
import idna

def test_the_device_runs_in_its_environment(device):
    wanted = {"board-old": "2.", "board-new": "3."}[device.name]
    assert idna.__version__.startswith(wanted), (device.name, idna.__version__)
    assert device.attrs["environment"] == {"board-old": "idna2", "board-new": "idna3"}[device.name]
"""


def test_a_device_runs_its_tests_in_the_environment_it_names(
    pytester: pytest.Pytester, envs_dir: Path
) -> None:
    """environment = "NAME" on a device: its workers run in that environment's interpreter (the
    environment has no slots of its own then), load mode stays the default, and the store says
    which packages ran each device's results."""
    pytester.makefile(".toml", testrack=DEVICES_IN_ENVIRONMENTS)
    pytester.makepyfile(test_dev=DEVICE_SUITE)
    result = run(pytester, envs_dir, "-p", "no:randomly", "--rack-mode", "each", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["board-old: ok - 1 passed", "board-new: ok - 1 passed"])
    assert "idna2:" not in result.stdout.str() and "idna3:" not in result.stdout.str()
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    (stored,) = store.runs()
    records = {r.name: r.installed for r in store.environments(stored.id)}
    store.close()
    assert set(records) == {"board-old", "board-new"} and records["board-old"] != records["board-new"]
    load = run(pytester, envs_dir, "-p", "no:randomly")
    load.stdout.fnmatch_lines(["*load mode*"])
    load.assert_outcomes(passed=1)


def test_a_device_naming_an_unknown_environment_is_a_usage_error(pytester: pytest.Pytester) -> None:
    rack = DEVICES_IN_ENVIRONMENTS.replace('environment = "idna3"', 'environment = "idna4"')
    pytester.makefile(".toml", testrack=rack)
    pytester.makepyfile(test_dev=DEVICE_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    wanted = "device board-new: environment = 'idna4' is not one of the rack's [[environments]] "
    wanted += "(idna2, idna3)"
    assert wanted in err, err
    assert "Traceback" not in err


def test_a_plugin_the_interpreter_cannot_have_is_named_with_the_fix() -> None:
    """Workers get the controller's pytest and plugins, pinned; when an environment's interpreter
    cannot install one of those (hypothesis 6.170 needs Python >= 3.11, say, on a 3.10), the error
    names that plugin and where it comes from, not the rack file."""
    from testrack import envs

    env = envs.Environment("py310", "/usr/bin/python3.10", (), (), None, 1)
    fails = [
        sys.executable, "-c",
        "import sys; sys.stderr.write('hypothesis==6.170.17 depends on Python>=3.11\\n'); sys.exit(1)",
    ]  # fmt: skip
    with pytest.raises(envs.EnvironmentProblem) as caught:
        envs._uv(
            env, fails, "install its packages", pinned=["pytest==9.2.0", "hypothesis==6.170.17"],
            interpreter={"implementation": "CPython", "version": "3.10.13"},
        )  # fmt: skip
    text = str(caught.value)
    assert text.startswith("environment py310: uv could not install its packages:\n"), text
    assert "hypothesis==6.170.17 is installed where testrack runs" in text, text
    assert "does not install on this CPython 3.10.13" in text and "rack file" not in text, text
