"""The fixtures a test asks for: ``device`` (the device its worker runs on), ``devices``
(every device of a test marked ``@pytest.mark.devices``) and ``testrack_sim`` (simulated
devices for one test). They also work in one plain pytest process, on the rack's first device
or on ``--rack-device NAME``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from testrack.devices import Devices
from testrack.rack import Device, Rack, RackError, discover_rack

if TYPE_CHECKING:
    from testrack.sim import SimRack

#: The run's rack, in the process the user started.
rack_key = pytest.StashKey[Rack]()
#: With ``--rack off``: the one device this process plays.
local_device_key = pytest.StashKey[Device]()
#: On a multi-device test's item, set by the worker before the test runs: its granted devices.
devices_key = pytest.StashKey[Devices]()


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> Device:
    """The device this worker runs on (with --rack off: --rack-device, else the rack's first)."""
    workerinput: dict[str, Any] | None = getattr(request.config, "workerinput", None)
    if workerinput and isinstance(workerinput.get("device"), dict):
        return Device.from_dict(workerinput["device"])
    local = request.config.stash.get(local_device_key, None)
    if local is not None:
        return local
    return _plain_rack(request.config).devices[0]


@pytest.fixture
def devices(request: pytest.FixtureRequest, device: Device) -> Devices:
    """All the devices of the test, by role and by position (``@pytest.mark.devices``).

    ``devices[0]`` is ``device``. A test without the marker gets its one device.
    """
    given: Devices | None = request.node.stash.get(devices_key, None)
    if given is not None:
        return given
    from testrack import explain  # here, not at the top: plain pytest runs never need them
    from testrack.scheduling.requests import declaration, first_assignment, shortfall

    declared = declaration(request.node)
    if declared.error is not None:
        pytest.fail(declared.error, pytrace=False)
    if declared.request is None:
        return Devices(None, [device])
    workerinput: dict[str, Any] | None = getattr(request.config, "workerinput", None)
    if workerinput and workerinput.get("testrack"):
        pytest.fail(
            f"this worker was not sent the devices of {request.node.nodeid} "
            f"({declared.request.describe()}); the controller must send them with the test",
            pytrace=False,
        )
    # One process, no controller: any matching set of the rack, starting with `device`.
    rack = _plain_rack(request.config)
    chosen = first_assignment(declared.request, rack.devices, first=device.name)
    if chosen is None:
        short = shortfall(declared.request, rack.devices)
        assert short is not None
        pytest.fail(explain.unsatisfiable(short, rack), pytrace=False)
    return Devices(declared.request, chosen)


def _plain_rack(config: pytest.Config) -> Rack:
    """The rack of a run without workers (found as the device fixture finds it), or the fix."""
    rack = config.stash.get(rack_key, None)
    if rack is None:
        try:
            rack = discover_rack(config.rootpath)
        except RackError as exc:
            pytest.fail(str(exc), pytrace=False)
    if rack is None:
        pytest.fail(
            "the device fixture needs a rack: run with --rack FILE (or --rack local:N), "
            "or add a testrack.toml with [[devices]] to the project root",
            pytrace=False,
        )
    return rack


@pytest.fixture
def testrack_sim() -> Iterator[Callable[..., SimRack]]:
    """Start simulated devices for one test: ``sim = testrack_sim(3, kind="board")``.

    Returns a started :class:`testrack.sim.SimRack` (``.devices``, ``.write_rack(path)``,
    ``.log``); every rack started this way is stopped when the test ends.
    """
    from testrack.sim import SimRack

    started: list[SimRack] = []

    def start(count: int = 3, kind: str = "board", **kwargs: Any) -> SimRack:
        rack = SimRack(count, kind=kind, **kwargs).start()
        started.append(rack)
        return rack

    yield start
    for rack in started:
        rack.stop()
