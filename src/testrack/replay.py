"""Workers' reports, replayed in the controller through pytest's own hooks.

The terminal, ``--junitxml``, ``--lf``, ``-x`` and every other plugin see each
report as if the test had run here: ``pytest_runtest_logstart``, ``logreport`` per
phase, ``logfinish``. A result is stored before it is shown. In each mode the same
test runs on several devices, and each run is a result of its own: its reports
carry ``<nodeid>@<device>`` (so the short summary, ``--durations``, ``-rA``, progress
and JUnit name the device), while the store, ``--lf`` and the per-device tables keep
the test's own id. Reports that cannot come from a test (a crash, no device left, a
time limit) are made here too, with the words from :mod:`testrack.explain`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Literal

import pytest

from testrack import messages as m
from testrack import relay
from testrack.recorder import Attempt
from testrack.store.base import FAILING, Result
from testrack.summary import phase_outcome, worse

if TYPE_CHECKING:
    from testrack.controller import Controller
    from testrack.gangs import GangRun
    from testrack.planning import TestInfo
    from testrack.workers import WorkerHandle

When = Literal["setup", "call", "teardown"]

#: How far past its time limit a test that finished on its own may have run and still count.
LIMIT_TOLERANCE = 0.05


class Replay:
    """Reports into pytest's hooks, and what each test did on each device."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.each = ctl.mode == "each"
        #: Tests that run on several devices in a load-mode run (--rack-failed: once on every
        #: device a test is failing on): named per device as in each mode.
        self.several: set[str] = set()
        #: Per test, per device: the worst outcome of its phases.
        self.outcomes: dict[str, dict[str, str]] = {}
        self.stop_reason: str | bool = False
        #: Results a shared run's queue refused (the lease was lost meanwhile): not shown here.
        self.hidden = 0
        #: --rack-rerun-failed: how often a test may run again after failing, and did.
        self.rerun_limit = int(ctl.config.getoption("rack_rerun_failed", 0) or 0)
        self.reruns: dict[str, int] = {}
        #: failed attempts run again, per device they failed on (the per-device summary lines)
        self.rerun_on: Counter[str] = Counter()
        self.failed_on: dict[str, set[str]] = {}
        #: Tests (each mode: a test on its device) that failed, then passed on a rerun: the
        #: devices they failed on, where they passed.
        self.flaky: dict[str, tuple[list[str], str]] = {}
        #: This loop round's batches of plain passing results, not yet stored or shown: stored
        #: in one commit, then shown, when the round ends (end_round). One commit a batch was
        #: the store's largest cost at many slots, where a round brings a dozen batches.
        self._round: list[tuple[WorkerHandle, m.TestReports, list[Any], list[str], list[str | None]]] = []
        self._round_results: list[Result] = []

    def display_id(self, nodeid: str, device: str | None) -> str:
        """The id a result is shown under: in each mode, the test on its device.

        ``test_x@board-2``, or ``test_x[1@board-2]`` for a parametrized test: pytest reads a
        node id's last ``[...]`` as its parameters, so the device goes inside them.
        """
        if not (device and (self.each or nodeid in self.several)):
            return nodeid
        if nodeid.endswith("]") and "[" in nodeid.rsplit("::", 1)[-1]:
            return f"{nodeid[:-1]}@{device}]"
        return f"{nodeid}@{device}"

    def on_reports(self, worker: WorkerHandle, message: m.TestReports) -> None:
        ctl = self.ctl
        config = ctl.config
        hook = config.hook
        device = worker.device.name
        gangs = ctl.gangs
        timed_out = worker.timed_out[0] if worker.timed_out else None
        late = None
        if timed_out is not None and timed_out in message.finished:
            # It ended on its own after its limit passed, before the worker was stopped for it:
            # the worker is fine and keeps going; the test is reported here, as over its limit.
            late, timed_out = timed_out, None
            worker.timed_out = worker.kill_at = None
        # Only batches of plain passing reports wait for the round's end: nothing else in them
        # (a retry, a rerun, a time limit, a test on several devices, a shared run's queue)
        # acts on the run before they are shown.
        deferred = (
            ctl.shared is None
            and timed_out is None
            and late is None
            and not gangs.active
            and not ctl.faults.limits_apply
            and all(isinstance(data, tuple) for data in message.reports)
        )
        reports: list[Any] = []
        #: Each report's node id, read once (pytest 9.2 builds the string on every read).
        ids: list[str] = []
        unpacker = worker.unpacker
        for data in message.reports:
            if isinstance(data, tuple):
                reports.append(unpacker.unpack(data))
            else:
                report = hook.pytest_report_from_serializable(config=config, data=data)
                unpacker.full(data)
                _keep_subtest_params(report, data)
                reports.append(report)
            ids.append(unpacker.nodeid or reports[-1].nodeid)
        outcomes = [phase_outcome(report) for report in reports]
        # Every attempt is stored: a rerun (pytest-rerunfailures) ends one, the next starts afresh.
        results = []
        attempts = worker.attempts
        for report, nodeid, outcome in zip(reports, ids, outcomes, strict=True):
            if nodeid == timed_out:
                continue
            attempt = attempts.get(nodeid)
            if attempt is None:
                attempt = attempts[nodeid] = Attempt()
            attempt.add(report, outcome)
            if outcome == "rerun":
                rerun = attempt.result(nodeid, device, worker.slot.id, worker.tests_done, "rerun")
                results.extend(self.on_each_device(rerun, gangs.run_of(worker.slot.id, nodeid)))
                worker.tests_done += 1
                attempts[nodeid] = Attempt()
        if deferred and any(
            (attempt := attempts.get(nodeid)) is not None
            and (attempt.device_error is not None or attempt.outcome not in (None, "passed"))
            for nodeid in message.finished
        ):
            deferred = False  # a test whose earlier phases failed or met a DeviceError ends here
        if not deferred:
            self.end_round()
        finished = [nodeid for nodeid in message.finished if nodeid != timed_out]
        # Looked up before a DeviceError's retry releases the devices of a test on several.
        runs = {nodeid: run for nodeid in finished if (run := gangs.run_of(worker.slot.id, nodeid))}
        retried = {nodeid for nodeid in finished if ctl.faults.retry_device_error(worker, nodeid)}
        overtime = {nodeid: text for nodeid in finished if (text := self._over_limit(worker, nodeid))}
        if late is not None and late not in overtime:
            overtime[late] = self._over_limit(worker, late, measured=False) or ""
        again = {
            nodeid
            for nodeid in finished
            if nodeid not in retried and nodeid not in overtime and self._runs_again(worker, nodeid)
        }
        # Stored before they are shown: what the user saw survives a killed controller.
        for nodeid in finished:
            attempt = worker.attempts.pop(nodeid, Attempt())
            outcome = "device_error" if nodeid in retried else "timeout" if nodeid in overtime else None
            if nodeid in again:
                outcome = "rerun"
            elif attempt.outcome in ("passed", "xfailed", "skipped") and self.reruns:
                key = self.run_key(worker, nodeid)  # in each mode, each device's run is its own
                if key in self.reruns:
                    self.flaky[key] = (sorted(self.failed_on.get(key, ())), device)
            if nodeid in overtime:
                attempt.message = overtime[nodeid].splitlines()[0]
            result = attempt.result(nodeid, device, worker.slot.id, worker.tests_done, outcome)
            results.extend(self.on_each_device(result, runs.get(nodeid)))
            worker.tests_done += 1
        if deferred:
            for nodeid in finished:
                ctl.feeder.unassign(worker, nodeid)
            self._round.append((worker, message, reports, ids, outcomes))
            self._round_results.extend(results)
            return
        refused = self.record(results)
        self._show_all(worker, message, reports, ids, outcomes, retried, overtime, again, timed_out, refused)

    def end_round(self) -> None:
        """Store the round's waiting results in one commit, then show them, in order."""
        if not self._round:
            return
        batches, results = self._round, self._round_results
        self._round, self._round_results = [], []
        self.record(results)
        for worker, message, reports, ids, outcomes in batches:
            self._show_all(worker, message, reports, ids, outcomes, unassigned=True)

    def _show_all(
        self,
        worker: WorkerHandle,
        message: m.TestReports,
        reports: list[Any],
        ids: list[str],
        outcomes: list[str | None],
        retried: Collection[str] = (),
        overtime: Mapping[str, str] | None = None,
        again: Collection[str] = (),
        timed_out: str | None = None,
        refused: Collection[str] = (),
        unassigned: bool = False,
    ) -> None:
        """A batch's reports through pytest's hooks, once its results are stored (a plain
        batch has nothing retried, over its limit, to run again or refused; its tests left
        their worker's queue when it came: ``unassigned``)."""
        overtime = overtime or {}
        ctl = self.ctl
        crashed = self._crashed_here(refused)
        for report, nodeid, outcome in zip(reports, ids, outcomes, strict=True):
            if nodeid in retried or nodeid in overtime or nodeid == timed_out:
                continue  # the device failed, or the limit passed: reported otherwise below
            if nodeid in refused:
                continue  # a shared run's queue gave it to another host meanwhile: theirs counts
            if nodeid in again and report.failed:
                report.outcome, outcome = "rerun", "rerun"  # as pytest-rerunfailures reports it
            self._show(worker, report, outcome, nodeid)
        for nodeid in again:
            self._rerun(worker, nodeid)
        for nodeid in message.finished:
            if nodeid == timed_out:
                continue  # reported when its worker is gone (it was killed for overrunning)
            if nodeid in overtime:
                info = ctl.tests.get(nodeid)
                if info is not None:
                    started = nodeid in worker.phases
                    self.synthetic(info, worker, overtime[nodeid], "call", started, "timeout", record=False)
            if nodeid in crashed and (info := ctl.tests.get(nodeid)) is not None:
                started = nodeid in worker.phases
                self.synthetic(info, worker, crashed[nodeid], "call", started, "crashed", record=False)
            ctl.feeder.finish_job(worker, nodeid, unassigned)

    def keep_unfinished(self, worker: WorkerHandle) -> None:
        """Tests shown in part whose last phase never came, from a worker that stopped cleanly
        when the run was interrupted (Ctrl-C in a teardown): stored as shown, saying so, since
        what the user saw must be in the store."""
        results = []
        for nodeid, phases in list(worker.phases.items()):
            attempt = worker.attempts.pop(nodeid, None)
            if attempt is None:
                continue
            missing = [p for p in ("setup", "call", "teardown") if p not in phases]
            note = f"interrupted: its {missing[0] if missing else 'teardown'} did not end"
            attempt.message = f"{attempt.message}; {note}" if attempt.message else note
            result = attempt.result(nodeid, worker.device.name, worker.slot.id, worker.tests_done)
            results.extend(self.on_each_device(result, self.ctl.gangs.run_of(worker.slot.id, nodeid)))
            worker.tests_done += 1
            del worker.phases[nodeid]
        if results:
            self.record(results)

    def _crashed_here(self, refused: Collection[str]) -> dict[str, str]:
        """Refused results whose tests the shared run's queue ended as crashed on this host."""
        shared = self.ctl.shared
        if shared is None:
            return {}
        return {nodeid: text for nodeid in refused if (text := shared.crashed_here.pop(nodeid, None))}

    def record(self, results: list[Result]) -> set[str]:
        """Store results before they are shown; in a shared run, through its queue, which refuses
        those whose claim went back meanwhile (returned: they must not be shown)."""
        shared = self.ctl.shared
        if shared is None:
            self.ctl.recorder.results(results)
            return set()
        refused = shared.complete(results)
        self.hidden += len(refused - shared.crashed_here.keys())
        return refused

    def hidden_note(self) -> str | None:
        """What the summary says of results a shared run's queue refused, all of them at once."""
        shared, hidden = self.ctl.shared, self.hidden
        if shared is None or not hidden:
            return None
        return (
            f"{hidden} result{'s' if hidden != 1 else ''} of shared run {shared.uid} not shown: the "
            "lease was lost meanwhile and the tests went back to the queue (whoever runs them reports "
            "them)"
        )

    def run_key(self, worker: WorkerHandle, nodeid: str, run: GangRun | None = None) -> str:
        """What a retry budget (--rack-retry-crashed, --rack-rerun-failed, DeviceError) counts:
        the test in load mode, where it runs once; in each mode, the test on its device (or set
        of devices), since it runs once on each and each run has its own budget."""
        if not self.each:
            return nodeid
        run = run or self.ctl.gangs.run_of(worker.slot.id, nodeid)
        return self.display_id(nodeid, "+".join(run.devices) if run else worker.device.name)

    def _runs_again(self, worker: WorkerHandle, nodeid: str) -> bool:
        """--rack-rerun-failed N: did this test fail, with reruns left?"""
        if not self.rerun_limit:
            return False
        attempt = worker.attempts.get(nodeid)
        if attempt is None or attempt.outcome not in ("failed", "error"):
            return False
        return self.reruns.get(self.run_key(worker, nodeid), 0) < self.rerun_limit

    def _rerun(self, worker: WorkerHandle, nodeid: str) -> None:
        """Queue a failed test again: on another device where one matches (each mode: the same
        device), and so in another worker process than the one it failed in."""
        job = next((j for j in worker.assigned if j.nodeid == nodeid), None)
        if job is None:
            return
        device = worker.device.name
        key = self.run_key(worker, nodeid)
        self.reruns[key] = self.reruns.get(key, 0) + 1
        self.rerun_on[device] += 1
        self.failed_on.setdefault(key, set()).add(device)
        others = self.ctl.dispatcher.devices_for(job) - {device} - set(self.ctl.health.quarantined())
        again = dataclasses.replace(job, eligible=frozenset(others)) if others and not self.each else job
        self.ctl.dispatcher.requeue([again])

    def _others(self, worker: WorkerHandle, nodeid: str) -> tuple[str, ...]:
        """The other devices of the test on several devices this worker runs, if it is one."""
        run = self.ctl.gangs.run_of(worker.slot.id, nodeid)
        return run.devices[1:] if run is not None else ()

    def _roles(self, worker: WorkerHandle, nodeid: str) -> dict[str, str | None]:
        """The role each device of the test on several devices this worker runs took ({}: none)."""
        run = self.ctl.gangs.run_of(worker.slot.id, nodeid)
        return self._roles_in(run) if run is not None else {}  # the common case: two lookups

    def _roles_in(self, run: GangRun) -> dict[str, str | None]:
        info = self.ctl.tests.get(run.gang.nodeid)
        if info is None or info.test.devices is None or not info.test.devices.named:
            return {}
        return {d: role.name for d, role in zip(run.devices, info.test.devices.positions(), strict=False)}

    def on_each_device(self, result: Result, run: GangRun | None) -> list[Result]:
        """A test on several devices is a result on each of them (its first device ran it),
        with the role each took; any other test, its one result."""
        if run is None:
            return [result]
        roles = self._roles_in(run)
        return [dataclasses.replace(result, device=d, role=roles.get(d)) for d in run.devices]

    def _show(self, worker: WorkerHandle, report: Any, outcome: str | None, nodeid: str) -> None:
        ctl = self.ctl
        hook = ctl.config.hook
        device = worker.device.name
        others = self._others(worker, nodeid)
        # read by the terminal and junitxml, as with xdist
        gang = self.ctl.gangs.run_of(worker.slot.id, nodeid) if others else None
        report.node = gang.label if gang is not None else worker.label
        report.user_properties.append(("device", device))
        if others:
            report.user_properties.append(("devices", ",".join((device, *others))))
            roles = self._roles(worker, nodeid)
            if roles:  # by role, in the marker's order: "server=host-1,client=phone-1,client=phone-2"
                report.user_properties.append(("roles", ",".join(f"{r}={d}" for d, r in roles.items())))
        shown = self.display_id(nodeid, "+".join((device, *others)))
        if shown != nodeid:
            report.nodeid = shown
        phases = worker.phases.get(nodeid)
        if phases is None:
            phases = worker.phases[nodeid] = set()
            hook.pytest_runtest_logstart(nodeid=shown, location=report.location)
        phases.add(report.when)
        logs = report.__dict__.pop("testrack_logs", None)
        if logs:
            relay.replay_logs(ctl.config, logs, report.when)
        if outcome is not None and outcome != "rerun":
            per_device = self.outcomes.setdefault(nodeid, {})
            for name in (device, *others):
                per_device[name] = worse(per_device.get(name), outcome)
        hook.pytest_runtest_logreport(report=report)
        session = ctl.session
        if not self.stop_reason and session is not None and session.shouldfail:
            # The count that reached --maxfail: later failures must not change the message.
            self.stop_reason = session.shouldfail

    def _over_limit(self, worker: WorkerHandle, nodeid: str, measured: bool = True) -> str | None:
        """The words for a test that finished, but later than its time limit allows (``measured``:
        by its reports; else the controller saw it pass the limit while it ran)."""
        faults = self.ctl.faults
        if measured and not faults.limits_apply:
            return None  # no test has a limit: the common case, on the per-result path
        limit, source = faults.limit_for(nodeid)
        if not measured:
            return (
                f"ran over its limit of {limit or 0:g} s (set by {source}) on {worker.device.name}; it "
                "finished before testrack stopped it, so its own outcome is not used"
            )
        attempt = worker.attempts.get(nodeid)
        if not limit or attempt is None or attempt.stopped <= attempt.started:
            return None
        took = attempt.stopped - attempt.started
        if took <= limit + LIMIT_TOLERANCE:
            return None
        return (
            f"ran {took:.2f} s on {worker.device.name}, over its limit of {limit:g} s (set by {source}); "
            "it finished before testrack stopped it, so its own outcome is not used"
        )

    def logfinish(self, worker: WorkerHandle | None, nodeid: str, device: str | None) -> None:
        info = self.ctl.tests.get(nodeid)
        location = info.test.location if info else (nodeid.split("::")[0], None, nodeid)
        if worker is not None and device is not None:
            device = "+".join((device, *self._others(worker, nodeid)))
        self.ctl.config.hook.pytest_runtest_logfinish(
            nodeid=self.display_id(nodeid, device), location=location
        )

    def synthetic(
        self,
        info: TestInfo,
        worker: WorkerHandle | None,
        text: str,
        when: When,
        started: bool = False,
        outcome_name: str | None = None,
        device: str | None = None,
        record: bool = True,
        gang: GangRun | None = None,
    ) -> None:
        """Report a failure the test itself could not report (crash, no device, time limit);
        a test on several devices (``gang``) has it on each of them."""
        ctl = self.ctl
        hook = ctl.config.hook
        test = info.test
        device = worker.device.name if worker else device
        others = gang.devices[1:] if gang is not None else ()
        properties = [("device", device)] if device else []
        if others:
            properties.append(("devices", ",".join((device or "-", *others))))
        outcome = outcome_name or ("unmatched" if worker is None else "error")
        if record:
            attempt = worker.attempts.pop(test.nodeid, Attempt()) if worker else Attempt()
            attempt.message = text.splitlines()[0][:500]
            attempt.longrepr = text
            slot = worker.slot.id if worker else "-"
            position = worker.tests_done if worker else 0
            result = attempt.result(test.nodeid, device or "-", slot, position, outcome)
            refused = self.record(self.on_each_device(result, gang) if others else [result])
            if worker is not None:
                worker.tests_done += 1
            crashed = self._crashed_here(refused)
            if test.nodeid in crashed:
                text, outcome = crashed[test.nodeid], "crashed"  # the queue's verdict, not this one
            elif refused:
                return  # a shared run's queue gave it to another host meanwhile: theirs counts
        shown = self.display_id(test.nodeid, "+".join((device, *others)) if device else device)
        if not started:
            hook.pytest_runtest_logstart(nodeid=shown, location=test.location)
        reports = [
            pytest.TestReport(
                shown, test.location, {}, "failed", text, when, user_properties=list(properties)
            )
        ]
        if when != "teardown":
            reports.append(
                pytest.TestReport(
                    shown, test.location, {}, "passed", None, "teardown", user_properties=list(properties)
                )
            )
        for report in reports:
            if worker is not None:  # read by the terminal and junitxml
                report.node = gang.label if gang is not None else worker.label  # type: ignore[attr-defined]
            hook.pytest_runtest_logreport(report=report)
        per_device = self.outcomes.setdefault(test.nodeid, {})
        for key in (device or "-", *others):
            per_device[key] = worse(per_device.get(key), outcome)
        hook.pytest_runtest_logfinish(nodeid=shown, location=test.location)

    def fix_last_failed(self) -> None:
        """``--lf`` remembers tests (not test@device), failed if they failed on any device."""
        if not (self.each or self.several):
            return
        lfplugin = self.ctl.config.pluginmanager.get_plugin("lfplugin")
        lastfailed = getattr(lfplugin, "lastfailed", None)
        if not isinstance(lastfailed, dict):
            return
        for key in [k for k in lastfailed if "@" in str(k).rsplit("::", 1)[-1]]:
            del lastfailed[key]
        for nodeid, per_device in self.outcomes.items():
            key = node_key(nodeid)
            if any(o in FAILING for o in per_device.values()):
                lastfailed[key] = True
            else:
                lastfailed.pop(key, None)


def node_key(nodeid: str) -> Any:
    """A node id as pytest's own plugins key it (a structured NodeId from pytest 9.2 on)."""
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pragma: no cover - pytest before 9.2
        return nodeid
    return NodeId.parse(nodeid)


def _keep_subtest_params(report: Any, data: dict[str, Any]) -> None:
    """A subtest's parameters travel as their reprs; reading them back must not repr them again
    (``SUBFAILED(i='2')`` where pytest shows ``SUBFAILED(i=2)``)."""
    context = getattr(report, "context", None)
    sent = data.get("_subtest.context")
    if context is not None and isinstance(sent, dict) and isinstance(sent.get("kwargs"), dict):
        object.__setattr__(context, "kwargs", dict(sent["kwargs"]))
