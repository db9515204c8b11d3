"""What a worker's plugins write for the whole session, carried to the controller.

A worker runs a pytest session of its own, but some of what happens in it belongs to
the session the user started: live log sections (``--log-cli-level``), the one log
file (``--log-file``, which every worker would otherwise truncate and overwrite),
``record_testsuite_property``, and warnings. The worker side collects them; the
controller side hands them to its own logging plugin, JUnit file and warning hook, so
they come out as in plain pytest, written once.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

import pytest

from testrack import messages as m

#: LogRecord fields that survive the trip (the message is formatted before it leaves).
_FIELDS = (
    "name", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
    "created", "msecs", "relativeCreated", "thread", "threadName", "process", "processName",
    "exc_text", "stack_info", "taskName",
)  # fmt: skip


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    data = {name: getattr(record, name, None) for name in _FIELDS}
    data["msg"] = record.getMessage()
    if record.exc_info and not record.exc_text:
        data["exc_text"] = logging.Formatter().formatException(record.exc_info)
    return data


def dict_to_record(data: dict[str, Any]) -> logging.LogRecord:
    return logging.makeLogRecord({**data, "args": None, "exc_info": None})


class LogRelay(logging.Handler):
    """Worker side: every record the session's live log or log file would take, kept as data."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record_to_dict(record))

    def take(self) -> list[dict[str, Any]]:
        records, self.records = self.records, []
        return records


def worker_log_relay(config: pytest.Config) -> LogRelay | None:
    """Before the worker's logging plugin starts: keep it off the one log file, and return the
    relay that carries what the live log and the log file would get (None: neither is on)."""
    from _pytest.logging import get_log_level_for_setting, get_option_ini

    levels = []
    if get_option_ini(config, "log_file"):
        config.option.log_file = os.devnull  # the controller writes the file, once
        levels.append(get_log_level_for_setting(config, "log_file_level", "log_level"))
    if config.getoption("log_cli_level", None) is not None or config.getini("log_cli"):
        levels.append(get_log_level_for_setting(config, "log_cli_level", "log_level"))
    if not levels:
        return None
    known = [level for level in levels if level is not None]
    return LogRelay(min(known) if known else logging.WARNING)


def replay_logs(config: pytest.Config, records: list[dict[str, Any]], when: str | None) -> None:
    """Controller side: a worker's records through this session's live log and log file.

    ``when`` is the test phase they were logged in (the live log's section), or None for
    records from outside a test, which only the log file takes.
    """
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    if plugin is None or not records:
        return
    live = plugin.log_cli_handler if when is not None else None
    if live is not None and hasattr(live, "set_when"):
        live.set_when(when)
    for data in records:
        record = dict_to_record(data)
        if live is not None and record.levelno >= (plugin.log_cli_level or 0):
            live.handle(record)
        if record.levelno >= (plugin.log_file_level or 0):
            plugin.log_file_handler.handle(record)


class SuiteProperties:
    """Worker side: stands in for the JUnit writer (which lives in the controller), so that
    ``record_testsuite_property`` reaches the one JUnit file instead of doing nothing."""

    def __init__(self, family: str, send: Any) -> None:
        self.family = family
        self._send = send

    def add_global_property(self, name: str, value: object) -> None:
        self._send(str(name), str(value))

    def node_reporter(self, nodeid: object) -> _NoAttributes:
        return _NoAttributes()


class _NoAttributes:
    """``record_xml_attribute`` in a worker: as under xdist, attributes are not carried."""

    def add_attribute(self, name: str, value: object) -> None:
        pass

    def add_property(self, name: str, value: object) -> None:
        pass


def add_suite_property(config: pytest.Config, name: str, value: str) -> None:
    """Controller side: a property a worker recorded, once, in this session's JUnit file."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is not None and (name, value) not in xml.global_properties:
        xml.add_global_property(name, value)


class WarningRelay:
    """Controller side of the workers' warnings: each shown once. Every worker that imports a
    file or configures the same plugins raises the same warning, and plain pytest shows it once."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._seen: set[tuple[str, str, str, int, str, str]] = set()

    def seen(self, warning_message: Any, when: str, nodeid: str) -> None:
        """Every warning this session shows, its own included: a worker's copy is not shown again."""
        self._seen.add(
            (
                _category_name(warning_message.category),
                str(warning_message.message),
                str(warning_message.filename),
                int(warning_message.lineno),
                when,
                nodeid,
            )
        )

    def show(self, message: m.WarningRecorded) -> None:
        """A worker's warning, through this session's hook, unless it was shown already."""
        key = (
            message.category,
            message.message,
            message.filename,
            message.lineno,
            message.when,
            message.nodeid,
        )
        if key in self._seen:
            return
        category = _resolve_category(message.category)
        record = warnings.WarningMessage(
            message=category(message.message),
            category=category,
            filename=message.filename,
            lineno=message.lineno,
        )
        self.config.hook.pytest_warning_recorded.call_historic(
            kwargs=dict(warning_message=record, when=message.when, nodeid=message.nodeid, location=None)
        )


def _category_name(category: type[Warning]) -> str:
    return f"{category.__module__}.{category.__qualname__}"


def _resolve_category(name: str) -> type[Warning]:
    """The warning class by name, without importing anything (test modules stay unimported)."""
    module_name, _, qualname = name.rpartition(".")
    obj: Any = sys.modules.get(module_name)
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return UserWarning
    if isinstance(obj, type) and issubclass(obj, Warning):
        return obj
    return UserWarning
