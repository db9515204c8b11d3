"""Workers cloned from the first one once it has collected: configure and import once per run.

Why: a worker's pytest configuration and its import and collection of the test files cost the
same in every worker, and with 16 workers on 2 cores they were most of a run's start (a shared
run's hosts measured ~75 ms and ~0.1 s per 1,600 tests, per worker). So the first worker (the
*template*) configures, starts its session and collects every file as usual; then, before any
test, it forks one copy per other slot. A copy is what that slot's own worker would have been,
every file imported before its first test as in plain pytest, with its own socket, scoreboard,
output pipes, environment, ``workerinput`` and base temporary directory.

That holds only where the configuration and collection did not depend on which worker ran
them. The template therefore watches, from its start to the fork, what it reads of what differs
between slots: ``PYTEST_XDIST_WORKER``, ``TESTRACK_DEVICE`` and ``TESTRACK_WORKER`` in the
environment, and ``workerinput`` keys whose values differ (``workerid``, ``device``, what a
plugin's ``pytest_configure_node`` gave each slot). It also refuses when it holds what copies
cannot share: a thread, a child process, a socket, or a plugin or conftest that tears something
down at the session's end (``pytest_sessionfinish``, ``pytest_unconfigure``) and would do it in
every copy. What each copy redoes for itself is no reason: a client known to be per process
(pytest-rerunfailures' connection to the failure counts) is reopened, and pytest-cov's worker
id set again (``renew_in_copy``). Refused, it says why (``CloneRefused``) and the
controller starts the other workers on their own. The launcher only plans a clone where every
slot's device has the same ``env`` (a device's env may be read by code that no watch sees) and
no environment's interpreter. ``TESTRACK_START=fork`` turns cloning off.

A copy is forked twice, so that it becomes a child of the controller (a child subreaper for
that moment), which waits for it and sees how it ended, as for any worker it forked itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from testrack import messages
from testrack.trace import trace

if TYPE_CHECKING:
    from testrack.controller import Controller
    from testrack.workers import WorkerHandle

#: What the environment says about which worker this is; the same for every slot otherwise.
IDENTITY_ENV = ("PYTEST_XDIST_WORKER", "TESTRACK_DEVICE", "TESTRACK_WORKER")
#: Plugins whose session-end hooks undo nothing a copy would share (pytest's own, ours, and
#: plugins that only report, or whose state is per process and restarts in each copy).
SAFE_PLUGINS = (
    "_pytest.",
    "pytest_randomly",
    "_hypothesis_pytestplugin",
    "xdist.",
    "pytest_timeout",
    "pytest_benchmark",  # off in workers, as under xdist
    "pytest_rerunfailures",  # --fail-on-flaky reads this process's own tests
    "pytest_html.",  # unregisters its report, which workers never register
    "pytest_django.",  # undoes its own database blocker, a per-process state
)
#: Plugins that read the identity variables only to learn whether they run in a worker at all
#: (pytest-benchmark turns itself off there), which is as true in every clone.
PRESENCE_ONLY = ("pytest_benchmark",)
#: ``workerinput`` keys that a plugin reads only for what each copy sets again for itself
#: (``renew_in_copy``): pytest-cov, the worker id it gives its coverage data.
RENEWED = {"pytest_cov.": ("workerid",)}
#: PR_SET_CHILD_SUBREAPER, from <linux/prctl.h>.
_PR_SET_CHILD_SUBREAPER = 36


class Ends:
    """A clone's ends of its socket, scoreboard and output pipes, open in the template."""

    def __init__(self, sock: int, board: int, out_w: int, err_w: int) -> None:
        self.sock = sock
        self.board = board
        self.out_w = out_w
        self.err_w = err_w

    def fds(self) -> tuple[int, ...]:
        return (self.sock, self.board, self.out_w, self.err_w)


#: Set in a template worker by the launcher: each clone slot's ends, by slot id.
ENDS: dict[str, Ends] = {}


class Watch:
    """What the template read, between its start and the fork, of what differs between slots."""

    def __init__(self) -> None:
        self.env_read: set[str] = set()
        self.input_read: set[str] = set()
        self._environ: Any = None

    def start(self) -> None:
        """Watch the environment: ``os.environ`` becomes a mapping that notes the identity
        variables read (``os.getenv`` and ``in`` go through it too)."""
        self._environ = os.environ
        os.environ = _WatchedEnviron(self)  # noqa: B003 - the same data

    def stop(self) -> None:
        if self._environ is not None:
            os.environ = self._environ  # noqa: B003 - unwatched
            self._environ = None

    def workerinput(self, data: dict[str, Any]) -> dict[str, Any]:
        return _WatchedInput(self, data)


class _WatchedEnviron(os._Environ):  # type: ignore[type-arg]
    def __init__(self, watch: Watch) -> None:
        real = os.environ
        super().__init__(
            real._data,  # type: ignore[attr-defined]
            real.encodekey,
            real.decodekey,
            real.encodevalue,
            real.decodevalue,
        )
        self._watch = watch
        self._copying = 0

    def __iter__(self) -> Iterator[str]:
        # A walk over every variable is a copy, for a child process (platform.architecture()
        # makes one at configure time): the reads that follow are not this process's own. A
        # child still alive at the fork refuses the clone anyway.
        self._copying = len(self._data)  # type: ignore[attr-defined]
        return super().__iter__()

    def __getitem__(self, key: str) -> str:
        if self._copying:
            self._copying -= 1
        elif key in IDENTITY_ENV and not _asked_by(PRESENCE_ONLY):
            self._watch.env_read.add(key)
        return super().__getitem__(key)  # type: ignore[no-any-return]


def _asked_by(modules: tuple[str, ...]) -> bool:
    """Whether the code reading the environment or ``workerinput`` (past ``os`` and the mapping
    machinery) is in one of these modules."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in ("os", "collections.abc", __name__):
        frame = frame.f_back  # type: ignore[assignment]
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return str(name).startswith(modules)


def _renewed(key: object) -> tuple[str, ...]:
    """The modules whose reads of this ``workerinput`` key each copy redoes."""
    return tuple(module for module, keys in RENEWED.items() if key in keys)


class _WatchedInput(dict):  # type: ignore[type-arg]
    """``config.workerinput`` in the template: notes every key read."""

    def __init__(self, watch: Watch, data: dict[str, Any]) -> None:
        super().__init__(data)
        self._watch = watch

    def __getitem__(self, key: str) -> Any:
        if not ((modules := _renewed(key)) and _asked_by(modules)):  # no frame walk for most keys
            self._watch.input_read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if not ((modules := _renewed(key)) and _asked_by(modules)):  # no frame walk for most keys
            self._watch.input_read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._watch.input_read.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self._watch.input_read.update(super().keys())
        return super().__iter__()

    def items(self) -> Any:
        self._watch.input_read.update(super().keys())
        return super().items()

    def values(self) -> Any:
        self._watch.input_read.update(super().keys())
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._watch.input_read.update(super().keys())
        return dict(super().items())


def refusal(watch: Watch, differing: tuple[str, ...], config: Any, own_fds: set[int]) -> str | None:
    """Why this template must not be cloned, or None."""
    read = sorted(watch.env_read)
    if read:
        return f"the configuration or collection read {', '.join(read)} from the environment"
    inputs = sorted(watch.input_read & set(differing))
    if inputs:
        return f"the configuration or collection read workerinput[{inputs[0]!r}], which differs between slots"
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.current_thread())
        return f"a thread runs ({names})"
    children = _children()
    if children:
        return f"a child process runs (pid {children[0]})"
    sockets = _sockets(own_fds | client_sockets(config))
    if sockets:
        return f"a socket is open (descriptor {sockets[0]})"
    return session_end(config.hook)


#: Set on a session-end hook (``pytest_sessionfinish.testrack_clone_safe = True``) by a conftest
#: or plugin whose hook undoes only what its own process did after the fork, if anything.
CLONE_SAFE = "testrack_clone_safe"


def session_end(hook: Any) -> str | None:
    """A plugin or conftest (not one known or marked to be safe) that acts at the session's end,
    which every copy would do: why not to clone, or None."""
    for name in ("pytest_sessionfinish", "pytest_unconfigure"):
        for impl in getattr(hook, name).get_hookimpls():
            module = getattr(impl.plugin, "__name__", None) or type(impl.plugin).__module__
            if module.startswith(("testrack", *SAFE_PLUGINS)) or getattr(impl.function, CLONE_SAFE, False):
                continue
            path = getattr(impl.plugin, "__file__", None)
            where = path if path and module.rpartition(".")[2] == "conftest" else module
            return (
                f"{where} implements {name}, which every copy would run; if it tears down nothing "
                f"set up while configuring or collecting, set {name}.{CLONE_SAFE} = True"
            )
    return None


def _rerunfailures_client(config: Any) -> Any:
    """pytest-rerunfailures' connection to the failure counts the controller keeps (with xdist
    installed), or None. Its server serves each connection on its own thread, so each process
    needs one of its own: a copy's requests on the template's would mix with the template's."""
    db = getattr(config, "failures_db", None)
    kind = type(db)
    if kind.__module__ == "pytest_rerunfailures" and kind.__name__ == "ClientStatusDB":
        return db
    return None


def client_sockets(config: Any) -> set[int]:
    """Sockets of per-process clients that each copy reopens (so not a reason to refuse)."""
    db = _rerunfailures_client(config)
    return {db.sock.fileno()} if db is not None else set()


def renew_in_copy(config: Any) -> None:
    """In a fresh copy, with its own ``workerinput``: a per-process client gets a connection of
    its own, and pytest-cov the copy's worker id. (Its coverage goes on measuring: coverage.py
    writes a forked process's data to a file of its own, which the controller combines.)"""
    db = _rerunfailures_client(config)
    if db is not None:
        db.sock.close()  # this process's descriptor only: the template's connection stays up
        config.failures_db = type(db)(config.workerinput["sock_port"], config.workerinput["statusdb_token"])
    cov = getattr(config.pluginmanager.get_plugin("_cov"), "cov_controller", None)
    if cov is not None and getattr(cov, "nodeid", None) is not None:
        cov.nodeid = config.workerinput["workerid"]


def _children() -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                found += [int(pid) for pid in f.read().split()]
    return found


def _sockets(own: set[int]) -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in own:
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                found.append(fd)
    return found


def set_subreaper(on: bool) -> bool:
    """Make this process (the controller) adopt orphaned descendants, for the clones' second
    fork; False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def fork_clone() -> bool:
    """Fork a clone through a short-lived middle process, so that the controller (a subreaper)
    becomes its parent. True in the clone, False in the template."""
    middle = os.fork()
    if middle == 0:
        me = os.getpid()
        try:
            if os.fork() != 0:
                os._exit(0)
        except BaseException:
            os._exit(70)
        while os.getppid() == me:  # until adopted: the controller then waits for it
            os.sched_yield()
        return True
    os.waitpid(middle, 0)
    return False


def redirect(old: int, new: int) -> None:
    """Point every descriptor of this process that is the pipe ``old`` is at ``new`` instead:
    pytest's capture and faulthandler keep copies of the standard streams' descriptors."""
    try:
        target = os.fstat(old)
    except OSError:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd == new:
            continue
        with contextlib.suppress(OSError):
            seen = os.fstat(fd)
            if (seen.st_dev, seen.st_ino) == (target.st_dev, target.st_ino) and stat.S_ISFIFO(seen.st_mode):
                os.dup2(new, fd)


class Cloning:
    """The controller's side: when to ask the template to clone itself, and what follows."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.asked = False
        #: A Clone naming slots went to the template (it may still refuse).
        self.sent = False
        self.settled = ctl.launcher.template is None
        #: Why the workers were not cloned after all (shown with the run's notes), if planned.
        self.refused: str | None = None

    @property
    def cloned(self) -> bool:
        """The template cloned itself (whether or not every clone came up)."""
        return self.sent and self.refused is None

    @property
    def why_not(self) -> str | None:
        """Why the workers were started one by one where clones were the way (said on the run's
        "collected" line: at 64 slots, each worker's own start costs seconds of CPU)."""
        if self.cloned:
            return None
        return self.refused or self.ctl.launcher.not_cloned

    @property
    def stage(self) -> str:
        """What the copies share with the template: said on the run's "collected" line."""
        return "collection" if self.after_collection() else "configuration"

    def template(self) -> WorkerHandle | None:
        template = self.ctl.launcher.template
        if template is None or self.ctl.workers.get(template.slot.id) is not template:
            return None
        return template

    def pending(self) -> list[WorkerHandle]:
        return [w for w in self.ctl.workers.values() if w.pending and w.alive]

    def after_start(self) -> None:
        """The session's workers are taken: clones of slots not taken now are not made (a
        slot leased later starts its own worker), nor any where the run imports its own way."""
        if self.settled:
            return
        ctl = self.ctl
        ctl.launcher.drop_pending()
        if self.template() is None or not self.pending():
            self.give_up(None)
        elif ctl.order.imports is not None:
            self.give_up("a replay imports what each worker imported then")
        elif ctl.lazy:
            self.give_up("--rack-collect lazy")

    def after_collection(self) -> bool:
        """Clone once the template has imported every file where every worker imports every
        file anyway (each mode, a shared run, ``--rack-collect all``: the default); in load
        mode with ``eager``, where each file is imported by few workers, as soon as it has
        configured: the copies then share only the
        configuration, and import their files in parallel."""
        ctl = self.ctl
        return ctl.mode == "each" or ctl.shared is not None or ctl.collect_all

    def on_template_ready(self, worker: WorkerHandle) -> None:
        if worker is self.template() and not self.asked and not self.settled and not self.after_collection():
            self.ask([])

    def on_collected(self, worker: WorkerHandle) -> None:
        """Once the template has collected every file, with nothing in flight: ask it."""
        ctl = self.ctl
        template = self.template()
        if self.asked or self.settled or worker is not template or not self.after_collection():
            return
        assert template is not None
        keys = ctl.collection.keys
        if template.collecting or ctl.collection.to_collect or not set(keys) <= template.imported:
            return
        self.ask(keys)

    def ask(self, keys: list[str]) -> None:
        """Have the template clone itself for every pending slot; the copies have imported
        ``keys`` as the template did, and found the same tests in them."""
        ctl = self.ctl
        template = self.template()
        pending = self.pending()
        if template is None or not pending:
            self.give_up(None)
            return
        if not set_subreaper(True):
            self.give_up("this system cannot adopt the clones")
            return
        inputs = [self._input(w) for w in (template, *pending)]
        ctl.loop.send(template, ctl.launcher.clone_message(pending, inputs))
        self.asked = self.sent = True
        trace(f"controller: {template.slot.id} asked to clone itself for {len(pending)} slots")
        for clone in pending:
            ctl.collection.from_clone(clone, keys)

    def _input(self, worker: WorkerHandle) -> dict[str, Any]:
        return dict(worker.node.workerinput, basetemp=self.ctl.basetemp_for(worker.slot))

    def on_ready(self, worker: WorkerHandle, pid: int) -> None:
        from testrack.workers import PendingClone

        if worker.pending:
            assert isinstance(worker.proc, PendingClone)
            worker.proc.adopt(pid)
        self.on_template_ready(worker)
        if self.asked and not self.settled and not self.pending():
            self.settle()

    def give_up(self, reason: str | None) -> None:
        """Every pending clone's slot starts a worker of its own; the template stops watching."""
        ctl = self.ctl
        self.refused = reason
        if reason is not None:
            trace(f"controller: not cloning: {reason}")
        template = self.template()
        if template is not None and not self.asked:
            ctl.loop.send(template, messages.Clone((), (), ()))  # nothing to clone: stop watching
        self.asked = True
        for worker in self.pending():
            self.respawn(worker)
        self.settle()

    def settle(self) -> None:
        if not self.settled:
            self.settled = True
            set_subreaper(False)
            self.ctl.launcher.release_held()

    def respawn(self, pending: WorkerHandle) -> None:
        """A worker of its own in a pending clone's slot, with the same node (the plugins'
        ``pytest_configure_node`` ran for the slot already) and the same files to import."""
        ctl = self.ctl
        from testrack.workers import State

        ctl.loop.forget(pending)
        pending.state = State.DEAD
        keys = ctl.collection.take_in_flight(pending.slot.id)
        pending.kill()
        pending.close()
        pending.streams.clear()  # events already selected for them find nothing to read
        fresh = ctl.launcher.instead_of_clone(pending.slot)
        fresh.echo_to, fresh.node = pending.echo_to, pending.node
        ctl.launch(fresh)
        if keys:
            ctl.collection.send(fresh, keys)

    def on_lost(self, worker: WorkerHandle) -> bool:
        """A pending clone's socket closed (its template died before the fork, or the clone died
        before it said it was ready): its slot starts a worker of its own. True if it was one."""
        if not worker.pending:
            return False
        if self.ctl.workers.get(worker.slot.id) is not worker:
            return True  # replaced already (refused, say): its end of file is all that was left
        self.respawn(worker)
        if not self.pending():
            self.settle()
        return True
