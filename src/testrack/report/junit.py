"""JUnit XML that CI systems read right: one test case per result, one ``<testsuite>`` per device.

GitLab keys a test case by its classname and name and keeps only the first of duplicates;
Jenkins merges them. In each mode one test runs on every device, so pytest's own file
(``--junitxml``) holds several cases with one name. :func:`rewrite` post-processes that
file at the end of a rack run: in each mode a case's ``name`` becomes ``<name>@<device>``
(``test_x[1]@board-2``); in both modes the cases are grouped into one ``<testsuite>`` per
device, with ``hostname`` set to the device and a ``timestamp`` of its first result.
Load mode keeps pytest's names. Each case keeps its ``device`` and ``worker`` properties.
:func:`from_report` writes the same shape from the results store (``testrack report
--junitxml``).

Captured output follows pytest's ``junit_logging`` rules: none unless asked for, and a
passing test's only with ``junit_log_passing_tests`` (the store keeps output of failing
results only), so 60,000 results stay well under GitLab's 30 MB a file.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from testrack.report.model import Report, natural_key

#: pytest's ``junit_logging`` values.
LOGGING = ("no", "log", "system-out", "system-err", "out-err", "all")
_OUTCOME_TAGS = ("failure", "error", "skipped")
# XML 1.0 cannot hold these characters; pytest replaces them the same way (bin_xml_escape).
_ILLEGAL = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class JunitError(Exception):
    """The file cannot be read or written; the message names it and what to do."""


@dataclasses.dataclass(frozen=True)
class DeviceSpan:
    """When a device's first result started and its last one stopped (wall time)."""

    started: float
    stopped: float


@dataclasses.dataclass(frozen=True)
class Written:
    """What a JUnit file ended up holding."""

    cases: int
    suites: int
    bytes: int


# ---------------------------------------------------------------------------------- rewrite


def device_name(name: str, device: str) -> str:
    """An each-mode case's name: ``test_x[1]@board-2``. The run's reports carry the device
    already (``test_x@board-2``, or ``test_x[1@board-2]`` where pytest would read a trailing
    ``@board-2`` as part of the parameters): moved to the end, or added."""
    if name.endswith(f"@{device}]"):
        return f"{name[: -len(device) - 2]}]@{device}"
    if name.endswith(f"@{device}"):
        return name
    return f"{name}@{device}"


def rewrite(
    path: Path,
    mode: str,
    devices: Sequence[str] = (),
    spans: Mapping[str, DeviceSpan] | None = None,
) -> Written:
    """Rewrite pytest's ``--junitxml`` file in place: names per device (each mode), suites per device.

    ``devices`` gives the suites' order (the rack's); ``spans`` their timestamps and times,
    else the original suite's timestamp and the sum of the cases' times.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise JunitError(f"cannot read the JUnit file {path} that pytest wrote ({exc})") from None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = ET.Element("testsuites", {k: v for k, v in root.attrib.items() if k == "name"})
    for suite in suites:
        by_device: dict[str, list[ET.Element]] = {}
        for case in suite.findall("testcase"):
            device = _property(case, "device")
            name = case.get("name")
            if mode == "each" and device and name:
                together = _property(case, "devices")  # a test on several: test_x@board-1+board-2
                case.set("name", device_name(name, together.replace(",", "+") if together else device))
            by_device.setdefault(device or "", []).append(case)
        global_properties = suite.find("properties")
        name = suite.get("name", "pytest")
        order = {d: i for i, d in enumerate(devices)}
        named = sorted((d for d in by_device if d), key=lambda d: (order.get(d, len(order)), natural_key(d)))
        for device in named:
            span = (spans or {}).get(device)
            out.append(
                _suite(
                    f"{name}@{device}",
                    device,
                    by_device[device],
                    timestamp=_iso(span.started) if span else suite.get("timestamp", ""),
                    seconds=span.stopped - span.started if span else None,
                    properties=global_properties,
                )
            )
        if "" in by_device:  # collection errors, tests no device could run: this machine's
            out.append(
                _suite(
                    name,
                    suite.get("hostname", platform.node()),
                    by_device[""],
                    timestamp=suite.get("timestamp", ""),
                    seconds=None,
                    properties=global_properties,
                )
            )
    return _write(out, path)


def _property(case: ET.Element, name: str) -> str | None:
    properties = case.find("properties")
    if properties is None:
        return None
    for prop in properties.findall("property"):
        if prop.get("name") == name:
            return prop.get("value")
    return None


def _suite(
    name: str,
    hostname: str,
    cases: Sequence[ET.Element],
    timestamp: str,
    seconds: float | None,
    properties: ET.Element | None = None,
) -> ET.Element:
    counts = dict.fromkeys(_OUTCOME_TAGS, 0)
    for case in cases:
        for child in case:
            if child.tag in counts:
                counts[child.tag] += 1
    if seconds is None:
        seconds = sum(float(case.get("time") or 0.0) for case in cases)
    suite = ET.Element(
        "testsuite",
        name=name,
        errors=str(counts["error"]),
        failures=str(counts["failure"]),
        skipped=str(counts["skipped"]),
        tests=str(len(cases)),
        time=f"{max(seconds, 0.0):.3f}",
        timestamp=timestamp,
        hostname=hostname,
    )
    if properties is not None and len(properties):
        suite.append(properties)
    suite.extend(cases)
    return suite


def _iso(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp).astimezone().isoformat()


def _write(root: ET.Element, path: Path) -> Written:
    """Whole or not at all: a CI job never reads half a file."""
    suites = root.findall("testsuite")
    root.set("tests", str(sum(int(s.get("tests") or 0) for s in suites)))
    for key in ("failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key) or 0) for s in suites)))
    data = b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(
        root, encoding="utf-8", xml_declaration=False
    )
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        raise JunitError(f"cannot write the JUnit file {path} ({exc.strerror or exc})") from None
    finally:
        partial.unlink(missing_ok=True)
    return Written(sum(int(s.get("tests") or 0) for s in suites), len(suites), len(data))


# ---------------------------------------------------------------------------------- from the store


def from_report(report: Report, path: Path, logging: str = "no", suite_name: str = "pytest") -> Written:
    """Write the run's results as JUnit XML, shaped as :func:`rewrite` shapes pytest's file.

    Results replaced by a later attempt (a crash or a DeviceError that was retried) are left
    out, as pytest never reported them. ``logging`` is pytest's ``junit_logging``.
    """
    if logging not in LOGGING:
        raise JunitError(f"junit logging {logging!r} is not one of {', '.join(LOGGING)}")
    r = report.results
    per_device: dict[int, list[int]] = {}
    for i in report.final():
        per_device.setdefault(r.device[i], []).append(i)
    root = ET.Element("testsuites", name="pytest tests")
    for d, indexes in per_device.items():
        device = report.devices[d]
        cases = [_case(report, i, logging) for i in indexes]
        starts = [report.origin + r.start[i] / 1e6 for i in indexes]
        stops = [report.origin + r.stop[i] / 1e6 for i in indexes]
        if device == "-":  # no device could run these tests
            suite = _suite(suite_name, platform.node(), cases, _iso(report.run.started), None)
        else:
            suite = _suite(
                f"{suite_name}@{device}", device, cases, _iso(min(starts)), max(stops) - min(starts)
            )
        root.append(suite)
    order = {name: i for i, name in enumerate(sorted(report.devices, key=natural_key))}
    root[:] = sorted(
        root, key=lambda s: (s.get("hostname") not in order, order.get(s.get("hostname") or "", 0))
    )
    return _write(root, path)


def classname_and_name(nodeid: str) -> tuple[str, str]:
    """What pytest's junitxml makes of a node id: ``tests/test_a.py::TestX::test_y[1]`` gives
    ``("tests.test_a.TestX", "test_y[1]")``."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def _clean(text: str) -> str:
    return _ILLEGAL.sub(lambda m: f"#x{ord(m.group()):02X}", text)


def _case(report: Report, i: int, logging: str) -> ET.Element:
    r = report.results
    nodeid = report.tests[r.test[i]]
    device = report.devices[r.device[i]]
    outcome = report.outcomes[r.outcome[i]]
    classname, name = classname_and_name(nodeid)
    if report.run.mode == "each" and device != "-":
        name = f"{name}@{device}"
    case = ET.Element(
        "testcase",
        classname=_clean(classname),
        name=_clean(name),
        file=_clean(nodeid.split("::")[0]),
        time=f"{r.duration[i] / 1e6:.3f}",
    )
    properties = ET.SubElement(case, "properties")
    ET.SubElement(properties, "property", name="device", value=device)
    if r.lane[i] >= 0:
        ET.SubElement(properties, "property", name="worker", value=report.lanes[r.lane[i]][0])
    message = report.messages[r.message[i]] if r.message[i] >= 0 else outcome
    details = report.details[r.detail[i]] if r.detail[i] >= 0 else None
    text = details.longrepr if details and details.longrepr else message
    tag = {"failed": "failure", "crashed": "failure", "timeout": "failure", "error": "error",
           "unmatched": "error", "skipped": "skipped", "xfailed": "skipped"}.get(outcome)  # fmt: skip
    if tag is not None:
        child = ET.SubElement(case, tag, message=_clean(message[:1024]))
        if outcome == "xfailed":
            child.set("type", "pytest.xfail")
        elif outcome == "skipped":
            child.set("type", "pytest.skip")
        if tag != "skipped" or text != message:
            child.text = _clean(text)
    if details and tag in ("failure", "error"):
        for tag_name, text in _captured(details.sections, logging):
            ET.SubElement(case, tag_name).text = _clean(text)
    return case


def _captured(sections: Iterable[tuple[str, str]], logging: str) -> list[tuple[str, str]]:
    """pytest's junit_logging, applied to the stored sections of one result."""
    if logging == "no":
        return []
    log = "".join(_header(t) + s for t, s in sections if t.startswith("Captured log"))
    out = "".join(_header(t) + s for t, s in sections if t.startswith("Captured stdout"))
    err = "".join(_header(t) + s for t, s in sections if t.startswith("Captured stderr"))
    written: list[tuple[str, str]] = []
    pending = log if logging in ("log", "all") else ""
    if logging in ("system-out", "out-err", "all"):
        written.append(("system-out", pending + out))
        pending = ""
    if logging in ("system-err", "out-err", "all"):
        written.append(("system-err", pending + err))
        pending = ""
    if pending:
        written.append(("system-out", pending))
    return [(tag, text) for tag, text in written if text]


def _header(title: str) -> str:
    return f" {title} ".center(80, "-") + "\n"
