"""Declaring several devices per test: @pytest.mark.devices, the request, the devices fixture."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest

from testrack import Devices, explain
from testrack import messages as m
from testrack.rack import Device, Rack
from testrack.scheduling.matching import requirement_from_marker
from testrack.scheduling.requests import (
    Declaration,
    DeviceRequest,
    Role,
    declaration,
    eligibility,
    first_assignment,
    label,
    request_from_marker,
    shortfall,
)

HOST = Device("host-1", "host", "10.0.0.1", attrs={"os": "linux"})
PHONES = [
    Device(f"phone-{i}", "phone", f"10.0.1.{i}", attrs={"os": os}) for i, os in ((1, "android"), (2, "ios"))
]
BOARDS = [Device(f"board-{i}", "board", f"10.0.2.{i}") for i in (1, 2)]
RACK = Rack((HOST, *PHONES, *BOARDS), source="lab.toml")
KINDS = "host (host-1), phone (phone-1, phone-2), board (board-1, board-2)"


def req(*args: Any, **kwargs: Any) -> DeviceRequest:
    return request_from_marker(args, kwargs)


def error(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(ValueError) as info:
        request_from_marker(args, kwargs)
    return str(info.value)


# -- request_from_marker --------------------------------------------------------------------------


def test_roles_keep_the_markers_order_and_match_like_the_device_marker() -> None:
    """Each role's requirement is exactly what @pytest.mark.device would make of the same keys."""
    request = req(server={"kind": "host"}, client={"kind": "phone", "os": ["android", "ios"], "count": 2})
    assert request == DeviceRequest(
        (
            Role("server", requirement_from_marker((), {"kind": "host"}), 1),
            Role("client", requirement_from_marker((), {"kind": "phone", "os": ["android", "ios"]}), 2),
        )
    )
    assert request.size == 3
    assert request.named
    assert [role.name for role in request.positions()] == ["server", "client", "client"]


def test_short_form_is_one_unnamed_role() -> None:
    """devices(2, kind="phone") is two positions of one unnamed role."""
    request = req(2, kind="phone")
    assert request == DeviceRequest((Role(None, (("kind", ("phone",)),), 2),))
    assert not request.named
    assert request.describe() == "2 devices with kind='phone'"
    assert req(3).describe() == "3 devices with any device"


def test_count_is_reserved_and_attrs_reach_an_attribute_named_count() -> None:
    """count is the number of devices; attrs={"count": ...} matches an attribute of that name."""
    assert req(pair={"kind": "board", "attrs": {"count": 2}}).roles == (
        Role("pair", (("count", (2,)), ("kind", ("board",))), 1),
    )
    assert req(2, attrs={"count": 3}).roles[0].requirement == (("count", (3,)),)
    assert error(2, count=3) == (
        "@pytest.mark.devices(2, count=...): the number of devices is the positional argument, so count "
        'is reserved; to match an attribute named count write attrs={"count": ...}'
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "text"),
    [
        (
            (),
            {},
            "@pytest.mark.devices needs roles or a number of devices; write "
            '@pytest.mark.devices(server={"kind": "host"}, client={"kind": "phone", "count": 2}) or '
            '@pytest.mark.devices(2, kind="phone")',
        ),
        (
            (2, 3),
            {},
            "@pytest.mark.devices takes at most one positional argument (the number of devices), got 2; "
            'write @pytest.mark.devices(2, kind="phone")',
        ),
        (
            ("phone",),
            {},
            "@pytest.mark.devices('phone', ...): the positional argument is the number of devices, a whole "
            'number >= 1; write @pytest.mark.devices(2, kind="phone")',
        ),
        (
            (0,),
            {},
            "@pytest.mark.devices(0, ...): the positional argument is the number of devices, a whole "
            'number >= 1; write @pytest.mark.devices(2, kind="phone")',
        ),
        (
            (True,),
            {},
            "@pytest.mark.devices(True, ...): the positional argument is the number of devices, a whole "
            'number >= 1; write @pytest.mark.devices(2, kind="phone")',
        ),
        (
            (2,),
            {"server": {"kind": "host"}},
            "@pytest.mark.devices(2, server=...): give either a number of devices and one requirement "
            '(@pytest.mark.devices(2, kind="phone")) or roles (@pytest.mark.devices(server={"kind": '
            '"host"}, client={"kind": "phone", "count": 2})), not both',
        ),
        (
            (),
            {"kind": "phone"},
            "@pytest.mark.devices(kind='phone'): a role is a dict of requirements, for example "
            'kind={"kind": "phone", "count": 2}; for N devices alike write @pytest.mark.devices(N, '
            'kind="phone")',
        ),
        (
            (),
            {"client": {"kind": "phone", "count": 0}},
            "@pytest.mark.devices role 'client': count = 0 is not a number of devices; use a whole number "
            '>= 1, or leave it out for 1 (to match an attribute named count write attrs={"count": ...})',
        ),
        (
            (),
            {"client": {"os": None}},
            "@pytest.mark.devices role 'client': os=None: values must be strings, numbers or booleans (or a "
            "list of them, meaning any of them)",
        ),
        (
            (2,),
            {"os": {"android"}, "mem": []},
            "@pytest.mark.devices(2, mem=[]): values must be strings, numbers or booleans (or a list of "
            "them, meaning any of them)",
        ),
        (
            (),
            {"client": {"attrs": ["count"]}},
            "@pytest.mark.devices role 'client': attrs=['count']: attrs must be a dict of attribute "
            'requirements, for example attrs={"count": 2}',
        ),
        (
            (),
            {"client": {"attrs": {"kind": "phone"}}},
            "@pytest.mark.devices role 'client': attrs={'kind': ...}: kind is the device's own field, not "
            "an attribute; write kind=... beside attrs",
        ),
        (
            (2,),
            {"os": "ios", "attrs": {"os": "android"}},
            "@pytest.mark.devices(2, os=...): os is given both directly and in attrs; give it once",
        ),
    ],
)
def test_bad_markers_say_what_to_write(args: tuple[Any, ...], kwargs: dict[str, Any], text: str) -> None:
    """Every malformed marker is refused with the marker as written and the fix."""
    assert error(*args, **kwargs) == text


def test_a_request_pickles_inside_a_collected_test() -> None:
    """The request travels from worker to controller in CollectedTest.devices, unchanged."""
    test = m.CollectedTest("t.py::test_call", ("t.py", 3, "test_call"), (), devices=req(2, kind="phone"))
    assert pickle.loads(pickle.dumps(test)) == test
    run = m.Run(("t.py::test_call",), devices=(PHONES[1], PHONES[0]))
    assert pickle.loads(pickle.dumps(run)).devices == (PHONES[1], PHONES[0])


# -- declaration(item): which marker applies -------------------------------------------------------


@pytest.fixture
def declared(pytester: pytest.Pytester) -> Callable[[str], dict[str, Declaration]]:
    def collect(source: str) -> dict[str, Declaration]:
        return {item.name: declaration(item) for item in pytester.getitems(source)}

    return collect


def test_the_nearest_marker_decides(declared: Callable[[str], dict[str, Declaration]]) -> None:
    """A method's devices replaces a class's device, and a method's device replaces a class's devices."""
    found = declared(
        """
        import pytest
        pytestmark = pytest.mark.device(kind="board")

        def test_module_device(): pass

        @pytest.mark.devices(2, kind="phone")
        def test_function_devices(): pass

        @pytest.mark.device(revision="C")
        class TestBoards:
            @pytest.mark.devices(server={"kind": "host"}, client={"kind": "board"})
            def test_pair(self): pass

            def test_single(self): pass

        @pytest.mark.devices(2, kind="phone")
        class TestPhones:
            @pytest.mark.device(os="ios")
            def test_one_phone(self): pass

            def test_two_phones(self): pass

            @pytest.mark.devices(3, kind="phone")
            def test_three_phones(self): pass
        """
    )
    board = requirement_from_marker((), {"kind": "board"})
    assert found["test_module_device"] == Declaration(requirements=(board,))
    assert found["test_function_devices"] == Declaration(request=req(2, kind="phone"))
    assert found["test_pair"] == Declaration(request=req(server={"kind": "host"}, client={"kind": "board"}))
    assert found["test_single"] == Declaration(
        requirements=(requirement_from_marker((), {"revision": "C"}), board)
    )
    assert found["test_one_phone"] == Declaration(
        requirements=(requirement_from_marker((), {"os": "ios"}), board)
    )
    assert found["test_two_phones"] == Declaration(request=req(2, kind="phone"))
    assert found["test_three_phones"] == Declaration(request=req(3, kind="phone"))


def test_conflicting_and_broken_markers_are_errors(declared: Callable[[str], dict[str, Declaration]]) -> None:
    """Both markers on one test, two devices markers, or a bad one: an error with the fix, no request."""
    found = declared(
        """
        import pytest

        @pytest.mark.device(kind="board")
        @pytest.mark.devices(2)
        def test_both(): pass

        @pytest.mark.devices(2)
        @pytest.mark.devices(3)
        def test_twice(): pass

        @pytest.mark.devices("two")
        def test_bad(): pass

        @pytest.mark.parametrize("n", [pytest.param(1, marks=pytest.mark.devices(2, kind="phone"))])
        def test_param(n): pass
        """
    )
    assert found["test_both"] == Declaration(
        error="@pytest.mark.device and @pytest.mark.devices on the same test: use one; put the device's "
        "requirement into a role of @pytest.mark.devices"
    )
    assert found["test_twice"] == Declaration(
        error="@pytest.mark.devices given 2 times on the same test: merge them into one"
    )
    assert found["test_bad"].error is not None
    assert found["test_bad"].error.startswith("@pytest.mark.devices('two', ...): the positional argument")
    assert found["test_param[1]"] == Declaration(request=req(2, kind="phone"))


# -- against a rack -------------------------------------------------------------------------------


def test_eligibility_per_position() -> None:
    """Each position lists the devices its role matches."""
    request = req(server={"kind": "host"}, client={"kind": "phone", "count": 2})
    assert eligibility(request, RACK.devices) == (
        frozenset({"host-1"}),
        frozenset({"phone-1", "phone-2"}),
        frozenset({"phone-1", "phone-2"}),
    )


def test_a_servable_request_has_no_shortfall() -> None:
    """Roles that share devices are fine as long as distinct devices exist for every position."""
    assert shortfall(req(caller={"kind": "phone"}, callee={"kind": "phone"}), RACK.devices) is None
    assert shortfall(req(5), RACK.devices) is None


def test_too_few_of_one_kind_names_the_role_and_what_matches() -> None:
    """Three phones from a rack with two: how many, of which kind, which match, and the rack."""
    short = shortfall(req(3, kind="phone"), RACK.devices)
    assert short is not None
    assert explain.unsatisfiable(short, RACK) == (
        "no set of devices in the rack can run this test: it needs 3 devices with kind='phone', and the "
        "rack (lab.toml) has only 2 that match (phone-1, phone-2); its devices are "
        f"{KINDS}. Add matching devices to the rack or change the test's @pytest.mark.devices marker."
    )


def test_a_role_nothing_matches() -> None:
    """A role no device matches is named alone, even beside roles that are fine."""
    short = shortfall(req(server={"kind": "host"}, scope={"kind": "oscilloscope"}), RACK.devices)
    assert short is not None
    assert explain.unsatisfiable(short, RACK).startswith(
        "no set of devices in the rack can run this test: it needs scope (kind='oscilloscope'), and the "
        "rack (lab.toml) has none that matches; its devices are "
    )


def test_roles_competing_for_the_same_devices_are_named_together() -> None:
    """Two roles that each fit alone but not together: both named, with their total and the devices."""
    request = req(a={"kind": "phone"}, b={"os": ["android", "ios"]}, host={"kind": "host"}, c={"os": "ios"})
    short = shortfall(request, RACK.devices)
    assert short is not None
    assert short.needed == 3
    assert explain.unsatisfiable(short, RACK).startswith(
        "no set of devices in the rack can run this test: it needs 3 different devices for a "
        "(kind='phone'), b (os=any of 'android', 'ios') and c (os='ios'), and the rack (lab.toml) has "
        "only 2 that match (phone-1, phone-2); "
    )


def test_plain_run_assignment_starts_with_the_given_device() -> None:
    """Without workers, devices[0] is the `device` fixture's device whenever it can take position 0."""
    request = req(2, kind="phone")
    assert first_assignment(request, RACK.devices) == (PHONES[0], PHONES[1])
    assert first_assignment(request, RACK.devices, first="phone-2") == (PHONES[1], PHONES[0])
    assert first_assignment(request, RACK.devices, first="host-1") == (PHONES[0], PHONES[1])
    assert first_assignment(req(3, kind="phone"), RACK.devices) is None


def test_label_names_each_device_with_its_role() -> None:
    """Messages about a multi-device test name every device, with its role when there are roles."""
    request = req(server={"kind": "host"}, client={"kind": "phone", "count": 2})
    assert (
        label(request, ["host-1", "phone-1", "phone-2"])
        == "host-1 (server), phone-1 (client), phone-2 (client)"
    )
    assert label(req(2), ["phone-1", "phone-2"]) == "phone-1, phone-2"


# -- the Devices object -----------------------------------------------------------------------------


def test_devices_by_role_and_by_position() -> None:
    """devices["server"] is a device, devices["client"] a list (count 2), devices[i] by position."""
    devices = Devices(req(server={"kind": "host"}, client={"kind": "phone", "count": 2}), [HOST, *PHONES])
    assert devices["server"] == HOST
    assert devices["client"] == PHONES
    assert devices["client"][1] == PHONES[1]
    assert devices[0] == HOST
    assert devices[-1] == PHONES[1]
    assert devices[1:] == PHONES
    assert len(devices) == 3
    assert list(devices) == [HOST, *PHONES]
    assert devices.roles == ("server", "client")
    assert devices.role("server") == [HOST]
    assert PHONES[0] in devices
    assert repr(devices) == "Devices(server=host-1, client=[phone-1, phone-2])"


def test_devices_errors_say_what_exists() -> None:
    """A missing role or position names what the test has."""
    named = Devices(req(server={"kind": "host"}, client={"kind": "phone"}), [HOST, PHONES[0]])
    with pytest.raises(KeyError) as info:
        named["clients"]
    assert (
        info.value.args[0]
        == "devices['clients']: this test has no role 'clients'; its roles are server, client"
    )
    short = Devices(req(2, kind="phone"), PHONES)
    assert repr(short) == "Devices(phone-1, phone-2)"
    with pytest.raises(KeyError) as info:
        short["phone"]
    assert info.value.args[0] == (
        "devices['phone']: this test's devices have no roles; use positions, devices[0] to devices[1] "
        '(or declare roles: @pytest.mark.devices(server={"kind": ...}, client={"kind": ...}))'
    )
    with pytest.raises(IndexError, match=r"^devices\[2\]: this test has 2 devices \(positions 0 to 1\)$"):
        short[2]
    with pytest.raises(ValueError, match="asks for 2 devices"):
        Devices(req(2), [HOST])


# -- the fixture in a real pytest session -----------------------------------------------------------


def test_devices_fixture_in_a_run_without_workers(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """With --rack off every device is reachable: devices is a matching set starting with `device`."""
    write_rack([PHONES[0], HOST, PHONES[1]])
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.devices(server={"kind": "host"}, client={"kind": "phone"})
        def test_pair(devices, device):
            assert devices["server"].name == "host-1"
            assert devices["client"].name == "phone-1"
            assert device.name == "phone-1"

        @pytest.mark.devices(2, kind="phone")
        def test_two(devices, device):
            assert [d.name for d in devices] == ["phone-1", "phone-2"]
            assert devices[0] is device or devices[0] == device

        def test_plain(devices, device):
            assert list(devices) == [device]

        @pytest.mark.devices(3, kind="phone")
        def test_too_many(devices):
            pass
        """
    )
    result = pytester.runpytest("--rack", "off")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_too_many*",
            "no set of devices in the rack can run this test: it needs 3 devices with kind='phone', "
            "and the rack (*) has only 2 that match (phone-1, phone-2); its devices are phone "
            "(phone-1, phone-2), host (host-1). Add matching devices to the rack or change the test's "
            "@pytest.mark.devices marker.",
        ]
    )
