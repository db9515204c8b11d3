"""Plain passing reports on the wire: a few numbers instead of a serialized dict.

Most reports of a large suite are a passing phase with nothing captured: pytest's
``pytest_report_to_serializable`` and ``..._from_serializable`` hooks copy, convert
and rebuild all of it each time, which was the largest part of a worker's and the
controller's cost per test (docs/architecture.md). Such a report travels as a tuple
that says only what differs from the previous report on the same connection:

- ``(when, duration, start, stop)``: the same test as the previous report;
- ``(when, duration, start, stop, nodeid, location, added, removed)``: another test,
  whose keywords are the previous report's with ``removed`` taken out and ``added``
  put in (tests of one file share nearly all of theirs).

Both ends keep the previous report's test (a :class:`Template`) in stream order. A
report that is not plain (not passed, captured output, user properties, anything a
plugin added), or a session where a plugin other than pytest's own serializes
reports, travels as pytest's dict as before, so such plugins keep working.
"""

from __future__ import annotations

from typing import Any

import pytest

#: Plugins whose report (de)serialization hooks the compact form stands in for: pytest's
#: reports, and its subtests (which serialize only their own report type).
PYTEST_OWN = frozenset({"_pytest.reports", "_pytest.subtests"})
#: A plain TestReport's attributes, all of them (as this pytest names them): any other was
#: added by a plugin.
PLAIN_FIELDS = frozenset(pytest.TestReport("x.py::t", ("x.py", 0, "t"), {}, "passed", None, "call").__dict__)

CompactReport = tuple[Any, ...]


def only_pytest_serializes(hook: Any) -> bool:
    """Whether pytest's own plugins are all that implement ``hook`` (a hook caller)."""
    return all(getattr(impl.plugin, "__name__", None) in PYTEST_OWN for impl in hook.get_hookimpls())


class Template:
    """The test of the previous report on a connection: what a compact report leaves out."""

    __slots__ = ("keywords", "location", "nodeid", "parsed")

    def __init__(self) -> None:
        self.nodeid: str | None = None
        self.location: Any = None
        self.keywords: dict[str, Any] = {}
        #: The node id as the last report built holds it (pytest 9.2 parses it into a NodeId,
        #: which need not be done again for the same test's next phase).
        self.parsed: Any = None

    def follow(self, nodeid: str, location: Any, keywords: dict[str, Any]) -> None:
        self.nodeid, self.location, self.keywords, self.parsed = nodeid, location, keywords, nodeid

    def full(self, data: dict[str, Any]) -> None:
        """A report that travelled whole (serialized): the next compact one is relative to it.
        Both ends read the same dict, so their templates agree."""
        self.follow(data.get("nodeid", ""), data.get("location"), dict(data.get("keywords") or {}))


class Packer(Template):
    """Worker side: a report as a compact tuple when it is plain, else None."""

    __slots__ = ()

    def pack(self, report: pytest.TestReport) -> CompactReport | None:
        if (
            type(report) is not pytest.TestReport
            or report.outcome != "passed"
            or report.longrepr is not None
            or report.sections
            or report.user_properties
            or report.__dict__.keys() != PLAIN_FIELDS
        ):
            return None
        nodeid, location, keywords = report.nodeid, report.location, report.keywords
        timing = (report.when, report.duration, report.start, report.stop)
        if nodeid == self.nodeid and location == self.location and keywords == self.keywords:
            return timing
        before = self.keywords
        added = {key: value for key, value in keywords.items() if key not in before or before[key] != value}
        removed = tuple(key for key in before if key not in keywords)
        self.follow(nodeid, location, dict(keywords))
        return (*timing, nodeid, location, added, removed)


class Unpacker(Template):
    """Controller side: reports back from either form, in the order they were sent."""

    __slots__ = ()

    def unpack(self, data: CompactReport) -> pytest.TestReport:
        when, duration, start, stop = data[:4]
        if len(data) > 4:
            nodeid, location, added, removed = data[4:]
            keywords = dict(self.keywords)
            for key in removed:
                del keywords[key]
            keywords.update(added)
            self.follow(nodeid, location, keywords)
        report = pytest.TestReport(
            self.parsed, self.location, dict(self.keywords), "passed", None, when, (), duration, start, stop
        )
        self.parsed = getattr(report, "id", self.parsed)
        return report
