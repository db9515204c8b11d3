"""Rack files: testrack.toml, [tool.testrack], devices.json, local:N, and every error's words."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from testrack.rack import Device, Rack, RackError, discover_rack, dump_rack, load_rack, local_rack

FULL_RACK = """\
mode = "each"

[[devices]]
name = "board-1"
kind = "board"
address = "192.168.1.10"
capacity = 2
attrs = { revision = "C", mem_gb = 16, ratio = 1.5, fast = true, features = ["wifi", "bt"] }
env = { BOARD_IP = "192.168.1.10", BOARD_SERIAL = "0042" }

[[devices]]
name = "gpu-0"
kind = "gpu"
address = "localhost"
"""

PYPROJECT_RACK = """\
[project]
name = "demo"

[tool.testrack]
mode = "load"

[[tool.testrack.devices]]
name = "dut-a"
kind = "dut"
address = "10.0.0.1"
attrs = { revision = "B" }
"""

#: The start of a TOML rack with one complete device; tests append fields to it.
ONE_DEVICE = """\
[[devices]]
name = "board-1"
kind = "board"
address = "192.168.1.10"
"""

DEVICE_FIELDS_FIX = (
    "a device has name, kind, address, capacity, attrs, env and environment "
    "(put your own keys in attrs = { ... })"
)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, name: str = "testrack.toml") -> tuple[Path, str]:
    """Write ``text`` to ``name``, load it with --rack, and return (path, the RackError's text)."""
    path = write(tmp_path / name, text)
    with pytest.raises(RackError) as info:
        load_rack(name, tmp_path)
    return path, str(info.value)


# -- valid racks ----------------------------------------------------------------------------------


def test_full_testrack_toml_reads_every_field(tmp_path: Path) -> None:
    """Every device field (capacity, attrs of all value types, env) and mode survive reading."""
    path = write(tmp_path / "testrack.toml", FULL_RACK)
    rack = load_rack("testrack.toml", tmp_path)
    assert rack == Rack(
        devices=(
            Device(
                name="board-1",
                kind="board",
                address="192.168.1.10",
                capacity=2,
                attrs={
                    "revision": "C",
                    "mem_gb": 16,
                    "ratio": 1.5,
                    "fast": True,
                    "features": ["wifi", "bt"],
                },
                env={"BOARD_IP": "192.168.1.10", "BOARD_SERIAL": "0042"},
            ),
            Device(name="gpu-0", kind="gpu", address="localhost"),
        ),
        source=str(path),
        mode="each",
    )
    assert rack.devices[1].capacity == 1
    assert rack.devices[1].attrs == {}
    assert rack.devices[1].env == {}
    assert rack.slots == 3
    assert rack.kinds == {"board": ["board-1"], "gpu": ["gpu-0"]}
    assert rack.describe_kinds() == "board (board-1), gpu (gpu-0)"


def test_mode_is_optional(tmp_path: Path) -> None:
    """A rack without mode leaves the mode to --rack-mode (None, not a default)."""
    write(tmp_path / "testrack.toml", ONE_DEVICE)
    assert load_rack("testrack.toml", tmp_path).mode is None


def test_rack_path_is_relative_to_base_or_absolute(tmp_path: Path) -> None:
    """--rack resolves a relative path against the invocation directory; absolute paths as given."""
    sub = tmp_path / "lab"
    sub.mkdir()
    path = write(sub / "rack.toml", ONE_DEVICE)
    assert load_rack("lab/rack.toml", tmp_path).source == str(path)
    assert load_rack(str(path), tmp_path / "elsewhere").source == str(path)


def test_pyproject_tool_testrack_via_discover_and_via_load(tmp_path: Path) -> None:
    """[tool.testrack] in pyproject.toml is found by discovery and by --rack pyproject.toml."""
    path = write(tmp_path / "pyproject.toml", PYPROJECT_RACK)
    expected = Rack(
        devices=(Device("dut-a", "dut", "10.0.0.1", attrs={"revision": "B"}),),
        source=str(path),
        mode="load",
    )
    assert discover_rack(tmp_path) == expected
    assert load_rack("pyproject.toml", tmp_path) == expected


def test_discover_prefers_testrack_toml_over_pyproject(tmp_path: Path) -> None:
    """With both files, testrack.toml wins (and pyproject's section is not even read)."""
    toml = write(tmp_path / "testrack.toml", ONE_DEVICE)
    write(tmp_path / "pyproject.toml", PYPROJECT_RACK + "\n[[tool.testrack.devices]]\nbogus = 1\n")
    rack = discover_rack(tmp_path)
    assert rack is not None
    assert rack.source == str(toml)
    assert [d.name for d in rack.devices] == ["board-1"]


def test_discover_returns_none_without_a_rack(tmp_path: Path) -> None:
    """No testrack.toml and no [tool.testrack]: no rack, so pytest runs plainly."""
    assert discover_rack(tmp_path) is None
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n\n[tool.ruff]\nline-length = 100\n')
    assert discover_rack(tmp_path) is None


def test_discovered_rack_errors_name_the_discovered_file(tmp_path: Path) -> None:
    """A broken discovered testrack.toml fails with its own path, not silently."""
    path = write(tmp_path / "testrack.toml", "mode = 'fast'\n" + ONE_DEVICE)
    with pytest.raises(RackError) as info:
        discover_rack(tmp_path)
    assert str(info.value) == f'{path}: mode = "fast" is not a mode; use "load" or "each"'


def test_devices_json_classic_list(tmp_path: Path) -> None:
    """The recipe's devices.json (a list of addresses) gives one device per address, named by it."""
    path = tmp_path / "devices.json"
    path.write_text('["192.168.1.10", "192.168.1.11"]\n', encoding="utf-8")
    assert load_rack("devices.json", tmp_path) == Rack(
        devices=(
            Device("192.168.1.10", "device", "192.168.1.10"),
            Device("192.168.1.11", "device", "192.168.1.11"),
        ),
        source=str(path),
    )


def test_local_n_is_one_local_device_with_n_slots(tmp_path: Path) -> None:
    """--rack local:3 needs no file: one device "local" with capacity 3."""
    rack = load_rack("local:3", tmp_path)
    assert rack == Rack((Device("local", "local", "localhost", capacity=3),), source="local:3")
    assert rack.slots == 3


def test_local_auto_is_one_slot_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """local:auto uses os.cpu_count(), and 1 slot when the CPU count is unknown."""
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert local_rack("local:auto").devices[0].capacity == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert local_rack("local:auto").devices[0].capacity == 1


def test_dump_rack_round_trips_through_load_rack(tmp_path: Path) -> None:
    """dump_rack writes TOML that load_rack reads back to the same devices and mode."""
    devices = [
        Device(
            "board-1",
            "board",
            "192.168.1.10:5000",
            capacity=3,
            attrs={
                "features": ["wifi", "bt"],
                "fast": True,
                "slow": False,
                "mem_gb": 16,
                "ratio": 0.25,
                "label": 'say "hi"\\now',
                "dotted.key": "x",
                "owner": "café 🚀",
            },
            env={"BOARD_IP": "192.168.1.10", "WITH SPACE": "a\tb\nc"},
        ),
        Device("gpu-0", "gpu", "localhost"),
    ]
    path = tmp_path / "rack.toml"
    path.write_text(dump_rack(devices, mode="each"), encoding="utf-8")
    rack = load_rack("rack.toml", tmp_path)
    assert rack.devices == tuple(devices)
    assert [dict(d.env) for d in rack.devices] == [dict(d.env) for d in devices]
    assert rack.mode == "each"
    path.write_text(dump_rack(devices), encoding="utf-8")
    assert load_rack("rack.toml", tmp_path).mode is None


def test_dump_rack_text_is_plain_toml() -> None:
    """dump_rack's output is the readable rack file users see from `testrack sim`."""
    text = dump_rack(
        [Device("b-1", "board", "h:1", capacity=2, attrs={"f": ["x", 1]}, env={"E": "v"})],
        mode="load",
    )
    assert text == (
        'mode = "load"\n'
        "\n"
        "[[devices]]\n"
        'name = "b-1"\n'
        'kind = "board"\n'
        'address = "h:1"\n'
        "capacity = 2\n"
        'attrs = { f = ["x", 1] }\n'
        'env = { E = "v" }\n'
    )


# -- errors: the file as a whole ------------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A TOML syntax error says which file, which line, and to fix the syntax there."""
    path, message = load_error(tmp_path, ONE_DEVICE + "capacity =\n")
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "(at line 5, column" in message
    assert message.endswith("; fix the syntax at that line")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    """A misspelt table ([[device]]) is named, with what a rack may contain."""
    path, message = load_error(tmp_path, ONE_DEVICE.replace("[[devices]]", "[[device]]"))
    assert message == (
        f"{path}: unknown key device; a rack has [[devices]] tables and optional mode, random, seed and share"
    )


def test_several_unknown_top_level_keys(tmp_path: Path) -> None:
    """Several unknown keys are all listed, sorted, with the plural."""
    path, message = load_error(tmp_path, "zeta = 1\nalpha = 2\n" + ONE_DEVICE)
    assert message == (
        f"{path}: unknown keys alpha, zeta; a rack has [[devices]] tables and optional mode, random, "
        "seed and share"
    )


def test_bad_mode(tmp_path: Path) -> None:
    """An unknown mode names the two modes there are."""
    path, message = load_error(tmp_path, 'mode = "parallel"\n' + ONE_DEVICE)
    assert message == f'{path}: mode = "parallel" is not a mode; use "load" or "each"'


@pytest.mark.parametrize(
    "text", ['mode = "load"\n', "devices = []\n", ""], ids=["missing", "empty-list", "empty-file"]
)
def test_empty_rack(tmp_path: Path, text: str) -> None:
    """A rack with no devices says it is empty and how to add one."""
    path, message = load_error(tmp_path, text)
    assert message == (
        f"{path}: the rack is empty: add a [[devices]] table with name, kind and address, "
        "or use --rack local:N"
    )


@pytest.mark.parametrize(
    "text",
    ['devices = ["192.168.1.10"]\n', 'devices = "board-1"\n', '[devices]\nname = "board-1"\n'],
    ids=["list-of-strings", "string", "single-table"],
)
def test_devices_not_an_array_of_tables(tmp_path: Path, text: str) -> None:
    """devices as a string, a list of strings or one [devices] table: shows the [[devices]] form."""
    path, message = load_error(tmp_path, text)
    assert message == (
        f"{path}: devices must be an array of tables: write each device as [[devices]] "
        "followed by name = ..., kind = ..., address = ..."
    )


# -- errors: one device ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name", "kind", "address"])
def test_missing_required_field(tmp_path: Path, field: str) -> None:
    """Each required field, when missing, is named with the line to add and the device's number."""
    lines = [line for line in ONE_DEVICE.splitlines() if not line.startswith(field)]
    path, message = load_error(tmp_path, ONE_DEVICE + "\n" + "\n".join(lines) + "\n")
    label = "device #2" if field == "name" else "device #2 (board-1)"
    assert message == (f'{path}: {label}: missing field {field!r}; add {field} = "..." to [[devices]] #2')


@pytest.mark.parametrize(
    ("field", "value", "shown", "label"),
    [
        ("name", '""', '""', "device #1"),
        ("kind", '"  "', '"  "', "device #1 (board-1)"),
        ("address", '""', '""', "device #1 (board-1)"),
        ("address", "10", "10", "device #1 (board-1)"),
    ],
)
def test_empty_or_non_string_required_field(
    tmp_path: Path, field: str, value: str, shown: str, label: str
) -> None:
    """name, kind and address must be non-empty strings; the message shows the value given."""
    text = ONE_DEVICE.replace(
        next(line for line in ONE_DEVICE.splitlines() if line.startswith(field)),
        f"{field} = {value}",
    )
    path, message = load_error(tmp_path, text)
    assert message == f"{path}: {label}: field {field!r} must be a non-empty string, not {shown}"


def test_unknown_device_field(tmp_path: Path) -> None:
    """A misspelt device field is named, with the fields a device has and where own keys go."""
    path, message = load_error(tmp_path, ONE_DEVICE + 'revision = "C"\nadress = "x"\n')
    assert message == (
        f"{path}: device #1 (board-1): unknown field 'adress', 'revision'; {DEVICE_FIELDS_FIX}"
    )


@pytest.mark.parametrize("name", ["my board", "-board", "board/1", "bø"])
def test_bad_name_characters(tmp_path: Path, name: str) -> None:
    """A name with characters beyond letters, digits and . _ : @ - is refused, listing those."""
    path, message = load_error(tmp_path, ONE_DEVICE.replace('"board-1"', f'"{name}"'))
    assert message == (
        f"{path}: device #1 ({name}): name {name!r} may use only letters, digits and . _ : @ -; "
        "rename the device"
    )


def test_duplicate_name(tmp_path: Path) -> None:
    """Two devices with one name: both devices are numbered in the message."""
    other = ONE_DEVICE.replace('"board-1"', '"board-2"')
    path, message = load_error(tmp_path, ONE_DEVICE + "\n" + other + "\n" + ONE_DEVICE)
    assert message == (
        f"{path}: device #3 reuses the name 'board-1' of device #1; give every device a unique name"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [("0", "0"), ("-1", "-1"), ('"2"', '"2"'), ("true", "true"), ("1.5", "1.5")],
)
def test_bad_capacity(tmp_path: Path, value: str, shown: str) -> None:
    """capacity must be a whole number >= 1 (not 0, negative, a string, a boolean or a float)."""
    path, message = load_error(tmp_path, ONE_DEVICE + f"capacity = {value}\n")
    assert message == (
        f"{path}: device #1 (board-1): capacity = {shown} is not a number of slots; use a whole "
        "number >= 1 (how many tests may use the device at once), or leave it out for 1"
    )


def test_attrs_not_a_table(tmp_path: Path) -> None:
    """attrs given as a string shows the inline-table form."""
    path, message = load_error(tmp_path, ONE_DEVICE + 'attrs = "rev C"\n')
    assert message == (
        f'{path}: device #1 (board-1): attrs must be a table, for example attrs = {{ revision = "C" }}'
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [("{ major = 1 }", "{ major = 1 }"), ("[{ a = 1 }]", "[{ a = 1 }]")],
    ids=["nested-table", "list-of-tables"],
)
def test_attrs_value_must_be_scalar_or_list(tmp_path: Path, value: str, shown: str) -> None:
    """An attr holding a table (or tables) is refused, naming the attr and the allowed types."""
    path, message = load_error(tmp_path, ONE_DEVICE + f"attrs = {{ version = {value} }}\n")
    assert message == (
        f"{path}: device #1 (board-1): attrs.version must be a string, number, boolean or a list "
        f"of them, not {shown}"
    )


def test_env_not_a_table(tmp_path: Path) -> None:
    """env given as a list shows the inline-table form."""
    path, message = load_error(tmp_path, ONE_DEVICE + 'env = ["A=1"]\n')
    assert message == (
        f"{path}: device #1 (board-1): env must be a table, for example "
        'env = { CUDA_VISIBLE_DEVICES = "0" }'
    )


@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("true", "true"), ("[1, 2]", "[1, 2]")])
def test_env_value_not_a_string(tmp_path: Path, value: str, shown: str) -> None:
    """An env value that is not a string is shown as written, with the quoted line to write."""
    path, message = load_error(tmp_path, ONE_DEVICE + f"env = {{ GPU = {value} }}\n")
    quoted = shown.replace('"', '\\"')
    assert message == (
        f'{path}: device #1 (board-1): env.GPU = {shown} must be a string; quote it: GPU = "{quoted}"'
    )


# -- errors: reading the file ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    """A --rack file that does not exist is named, with how to make one or run locally."""
    with pytest.raises(RackError) as info:
        load_rack("lab.toml", tmp_path)
    assert str(info.value) == (
        f"--rack lab.toml: no such file {tmp_path / 'lab.toml'}; create it (see `testrack sim "
        "--help` for an example rack) or use --rack local:N to run on N local slots"
    )


def test_directory_is_not_a_rack_file(tmp_path: Path) -> None:
    """--rack DIR says it is a directory and suggests the rack file inside it."""
    (tmp_path / "lab").mkdir()
    with pytest.raises(RackError) as info:
        load_rack("lab", tmp_path)
    assert str(info.value) == (
        f"--rack lab: {tmp_path / 'lab'} is a directory; give a rack file such as "
        f"{tmp_path / 'lab' / 'testrack.toml'}, a devices.json, or local:N"
    )


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0,
    reason="root (and Windows) can read a mode-000 file",
)
def test_unreadable_file(tmp_path: Path) -> None:
    """A rack file without read permission gives the OS reason and says to check permissions."""
    path = write(tmp_path / "testrack.toml", ONE_DEVICE)
    path.chmod(0)
    try:
        with pytest.raises(RackError) as info:
            load_rack("testrack.toml", tmp_path)
    finally:
        path.chmod(0o644)
    assert str(info.value) == (
        f"{path}: cannot read the rack file (Permission denied); check its permissions"
    )


def test_read_permission_error_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The permission message, checked even as root: the OS reason and what to check."""
    path = write(tmp_path / "testrack.toml", ONE_DEVICE)

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(RackError) as info:
        load_rack("testrack.toml", tmp_path)
    assert str(info.value) == (
        f"{path}: cannot read the rack file (Permission denied); check its permissions"
    )


def test_non_utf8_file(tmp_path: Path) -> None:
    """A rack file in another encoding says where the bad byte is and to save it as UTF-8."""
    path = tmp_path / "testrack.toml"
    path.write_bytes(ONE_DEVICE.replace("board-1", "b\xf6rd").encode("latin-1"))
    with pytest.raises(RackError) as info:
        load_rack("testrack.toml", tmp_path)
    assert str(info.value) == (
        f"{path}: the rack file is not UTF-8 text (byte 0xf6 at offset 21); save it as UTF-8"
    )


def test_pyproject_without_tool_testrack(tmp_path: Path) -> None:
    """--rack pyproject.toml without [tool.testrack] says what to add."""
    path = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(RackError) as info:
        load_rack("pyproject.toml", tmp_path)
    assert str(info.value) == (
        f"{path}: has no [tool.testrack] section; add [[tool.testrack.devices]] tables "
        "or point --rack at a testrack.toml"
    )


@pytest.mark.parametrize("discover", [False, True], ids=["load", "discover"])
def test_pyproject_tool_testrack_not_a_table(tmp_path: Path, discover: bool) -> None:
    """tool.testrack = "file" (not a table) is an error naming the key, not a traceback or noise."""
    path = write(tmp_path / "pyproject.toml", '[tool]\ntestrack = "lab.toml"\n')
    with pytest.raises(RackError) as info:
        if discover:
            discover_rack(tmp_path)
        else:
            load_rack("pyproject.toml", tmp_path)
    assert str(info.value) == (
        f'{path}: tool.testrack = "lab.toml" is not a table; write [[tool.testrack.devices]] '
        "tables, or name a rack file with --rack FILE"
    )


def test_pyproject_errors_use_the_tool_testrack_prefix(tmp_path: Path) -> None:
    """Errors inside [tool.testrack] spell keys and tables as they appear in pyproject.toml."""
    path, message = load_error(tmp_path, PYPROJECT_RACK.replace('kind = "dut"\n', ""), name="pyproject.toml")
    assert message == (
        f"{path}: device #1 (dut-a): missing field 'kind'; add kind = \"...\" to [[tool.testrack.devices]] #1"
    )
    path, message = load_error(
        tmp_path, PYPROJECT_RACK.replace('mode = "load"', "colour = 1"), name="pyproject.toml"
    )
    assert message == (
        f"{path}: unknown key tool.testrack.colour; a rack has [[tool.testrack.devices]] tables "
        "and optional tool.testrack.mode, tool.testrack.random, tool.testrack.seed and tool.testrack.share"
    )


# -- errors: devices.json and local:N -------------------------------------------------------------


def test_devices_json_invalid_json_names_the_line(tmp_path: Path) -> None:
    """Broken JSON gives file:line, the parser's reason and the expected shape."""
    text = '[\n  "192.168.1.10",\n  192.168.1.11\n]\n'
    path, message = load_error(tmp_path, text, "devices.json")
    assert message == (
        f"{path}:3: invalid JSON (Expecting ',' delimiter); a devices.json is a list of addresses, "
        'for example ["192.168.1.10", "192.168.1.11"]'
    )


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('{"devices": ["a"]}', "a devices.json must be a list of addresses, and this one is an object"),
        ('"192.168.1.10"', "a devices.json must be a list of addresses, and this one is a string"),
    ],
    ids=["object", "string"],
)
def test_devices_json_not_a_list(tmp_path: Path, text: str, what: str) -> None:
    """devices.json must be a list; the message says what it is instead, and the alternative."""
    path, message = load_error(tmp_path, text, "devices.json")
    assert message == (
        f"{path}: {what}; for example "
        '["192.168.1.10", "192.168.1.11"]; for names, kinds and '
        "attributes write a testrack.toml instead"
    )


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ('["127.0.0.11", 12, null]', "entry #2 (12) is a number, entry #3 (null) is null"),
        ('["a", ""]', 'entry #2 ("") is an empty string'),
        ('[true, {"address": "a"}, ["b"], 1, 2]',
         'entry #1 (true) is a boolean, entry #2 ({"address": "a"}) is an object, entry #3 (["b"]) is a list '
         "(and 2 more)"),
    ],
    ids=["number-and-null", "empty-string", "many"],
)  # fmt: skip
def test_devices_json_names_each_bad_entry(tmp_path: Path, text: str, entries: str) -> None:
    """A bad entry is named by its place and value, with why it is not an address and the fix."""
    path, message = load_error(tmp_path, text, "devices.json")
    assert message == (
        f"{path}: {entries}; each entry must be an address in quotes, for example "
        '["192.168.1.10", "192.168.1.11"]; for names, kinds and attributes write a testrack.toml instead'
    )


def test_devices_json_empty_list(tmp_path: Path) -> None:
    """An empty devices.json is an empty rack, with the fix."""
    path, message = load_error(tmp_path, "[]", "devices.json")
    assert message == (
        f"{path}: the rack is empty: add at least one address to the list, or use --rack local:N"
    )


def test_devices_json_duplicate_address(tmp_path: Path) -> None:
    """An address listed twice is named, with the capacity alternative."""
    path, message = load_error(tmp_path, '["h1", "h2", "h1"]', "devices.json")
    assert message == (
        f"{path}: address 'h1' is listed twice; remove the duplicate (or give it capacity in a "
        "testrack.toml to run several tests on it at once)"
    )


@pytest.mark.parametrize("spec", ["local:0", "local:-2"])
def test_local_needs_at_least_one_slot(tmp_path: Path, spec: str) -> None:
    """local:0 (or negative) says it needs at least one slot."""
    with pytest.raises(RackError) as info:
        load_rack(spec, tmp_path)
    assert str(info.value) == (
        f"--rack {spec}: needs at least 1 slot; use --rack local:N with N >= 1 "
        "or --rack local:auto for one slot per CPU"
    )


@pytest.mark.parametrize(("spec", "count"), [("local:x", "'x'"), ("local:", "''"), ("local:2.5", "'2.5'")])
def test_local_not_a_number(tmp_path: Path, spec: str, count: str) -> None:
    """local:x says x is not a number of slots and gives examples."""
    with pytest.raises(RackError) as info:
        load_rack(spec, tmp_path)
    assert str(info.value) == (
        f"--rack {spec}: {count} is not a number of slots; use --rack local:N with N >= 1 "
        "(for example local:4) or --rack local:auto"
    )


def test_discover_reports_a_mistyped_tool_testrack_section(tmp_path: Path) -> None:
    """A [tool.testrack] whose devices key is misspelt is an error, not a silent plain run."""
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.testrack.device]]\nname = "a"\nkind = "k"\naddress = "x"\n'
    )
    with pytest.raises(
        RackError,
        match=r"unknown key tool\.testrack\.device; a rack has \[\[tool\.testrack\.devices\]\] tables",
    ):
        discover_rack(tmp_path)
