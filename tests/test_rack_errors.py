"""Acceptance: a malformed rack stops a real pytest session with one clear line and exit code 4."""

from __future__ import annotations

import textwrap

import pytest

pytestmark = pytest.mark.usefixtures("a_test_file")

ONE_DEVICE = """\
[[devices]]
name = "board-1"
kind = "board"
address = "192.168.1.10"
"""


@pytest.fixture
def a_test_file(pytester: pytest.Pytester) -> None:
    """A suite that would pass, so only the rack can make the session fail."""
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")


def assert_usage_error(result: pytest.RunResult, message: str) -> None:
    """Exit code 4, ``ERROR: <message>`` as one line on stderr, and no traceback anywhere."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, str(result.stdout) + str(result.stderr)
    assert f"ERROR: {message}" in result.stderr.lines, str(result.stderr)
    assert "Traceback" not in str(result.stdout)
    assert "Traceback" not in str(result.stderr)
    assert "passed" not in str(result.stdout), "tests ran despite the broken rack"


def write(pytester: pytest.Pytester, name: str, text: str) -> str:
    path = pytester.path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def test_toml_syntax_error(pytester: pytest.Pytester) -> None:
    """A TOML syntax error names the file and the line, and asks to fix the syntax there."""
    path = write(pytester, "lab.toml", ONE_DEVICE + "capacity =\n")
    result = pytester.runpytest_subprocess("--rack", "lab.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: {path}: invalid TOML: *(at line 5, column *); fix the syntax at that line"]
    )
    assert "Traceback" not in str(result.stdout) + str(result.stderr)


def test_missing_field(pytester: pytest.Pytester) -> None:
    """A device without kind names the device, the field and the line to add."""
    path = write(pytester, "lab.toml", ONE_DEVICE.replace('kind = "board"\n', ""))
    result = pytester.runpytest_subprocess("--rack", "lab.toml")
    assert_usage_error(
        result,
        f"{path}: device #1 (board-1): missing field 'kind'; add kind = \"...\" to [[devices]] #1",
    )


def test_unknown_field(pytester: pytest.Pytester) -> None:
    """A misspelt device field is named with the fields a device may have."""
    path = write(pytester, "lab.toml", ONE_DEVICE + 'revison = "C"\n')
    result = pytester.runpytest_subprocess("--rack", "lab.toml")
    assert_usage_error(
        result,
        f"{path}: device #1 (board-1): unknown field 'revison'; a device has name, kind, address, "
        "capacity, attrs, env and environment (put your own keys in attrs = { ... })",
    )


def test_duplicate_name(pytester: pytest.Pytester) -> None:
    """Two devices named alike are both pointed at."""
    path = write(pytester, "lab.toml", ONE_DEVICE + "\n" + ONE_DEVICE)
    result = pytester.runpytest_subprocess("--rack", "lab.toml")
    assert_usage_error(
        result,
        f"{path}: device #2 reuses the name 'board-1' of device #1; give every device a unique name",
    )


def test_bad_capacity(pytester: pytest.Pytester) -> None:
    """capacity = 0 names the device, the field and the allowed values."""
    path = write(pytester, "lab.toml", ONE_DEVICE + "capacity = 0\n")
    result = pytester.runpytest_subprocess("--rack", "lab.toml")
    assert_usage_error(
        result,
        f"{path}: device #1 (board-1): capacity = 0 is not a number of slots; use a whole number "
        ">= 1 (how many tests may use the device at once), or leave it out for 1",
    )


def test_empty_rack(pytester: pytest.Pytester) -> None:
    """A rack without devices says it is empty and how to add a device."""
    path = write(pytester, "lab.toml", 'mode = "each"\n')
    result = pytester.runpytest_subprocess("--rack", "lab.toml")
    assert_usage_error(
        result,
        f"{path}: the rack is empty: add a [[devices]] table with name, kind and address, "
        "or use --rack local:N",
    )


def test_missing_file(pytester: pytest.Pytester) -> None:
    """A --rack file that does not exist is named, with how to make one."""
    result = pytester.runpytest_subprocess("--rack", "nolab.toml")
    assert_usage_error(
        result,
        f"--rack nolab.toml: no such file {pytester.path / 'nolab.toml'}; create it (see "
        "`testrack sim --help` for an example rack) or use --rack local:N to run on N local slots",
    )


def test_directory_as_rack(pytester: pytest.Pytester) -> None:
    """--rack DIR says it is a directory and suggests the rack file inside it."""
    lab = pytester.mkdir("lab")
    result = pytester.runpytest_subprocess("--rack", "lab")
    assert_usage_error(
        result,
        f"--rack lab: {lab} is a directory; give a rack file such as {lab / 'testrack.toml'}, "
        "a devices.json, or local:N",
    )


def test_bad_pyproject_section(pytester: pytest.Pytester) -> None:
    """A misspelt table in [tool.testrack] is named with its pyproject spelling."""
    path = write(
        pytester,
        "pyproject.toml",
        ONE_DEVICE.replace("[[devices]]", "[tool.testrack]\n[[tool.testrack.device]]"),
    )
    result = pytester.runpytest_subprocess("--rack", "pyproject.toml")
    assert_usage_error(
        result,
        f"{path}: unknown key tool.testrack.device; a rack has [[tool.testrack.devices]] tables "
        "and optional tool.testrack.mode, tool.testrack.random, tool.testrack.seed and tool.testrack.share",
    )


def test_local_zero(pytester: pytest.Pytester) -> None:
    """--rack local:0 asks for at least one slot."""
    result = pytester.runpytest_subprocess("--rack", "local:0")
    assert_usage_error(
        result,
        "--rack local:0: needs at least 1 slot; use --rack local:N with N >= 1 "
        "or --rack local:auto for one slot per CPU",
    )


def test_bad_rack_mode(pytester: pytest.Pytester) -> None:
    """--rack-mode=bogus is refused by the option parser, listing the two modes."""
    result = pytester.runpytest_subprocess("--rack", "local:1", "--rack-mode=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*error: argument --rack-mode: invalid choice: 'bogus' (choose from *load*, *each*)"]
    )
    assert "Traceback" not in str(result.stdout) + str(result.stderr)


def test_discovered_broken_rack_fails_without_rack_option(pytester: pytest.Pytester) -> None:
    """A broken testrack.toml in the root fails the session even without --rack."""
    path = write(pytester, "testrack.toml", ONE_DEVICE + 'capacity = "2"\n')
    result = pytester.runpytest_subprocess()
    assert_usage_error(
        result,
        f'{path}: device #1 (board-1): capacity = "2" is not a number of slots; use a whole '
        "number >= 1 (how many tests may use the device at once), or leave it out for 1",
    )


def test_rack_off_ignores_a_broken_testrack_toml(pytester: pytest.Pytester) -> None:
    """--rack off skips discovery, so a broken testrack.toml does not stop a plain run."""
    write(pytester, "testrack.toml", "this is [not toml\n")
    result = pytester.runpytest_subprocess("--rack", "off")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "testrack:" not in str(result.stdout)  # no rack header: plain pytest
    assert "ERROR" not in str(result.stderr)
