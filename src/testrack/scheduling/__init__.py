"""Pure scheduling: which devices may run a test, and which tests start next, on which slots.

Nothing here starts a process or touches pytest's runtime; it is tested as plain
functions and objects (see ``tests/test_scheduling.py``).
"""

from testrack.scheduling.allocation import Decision, Grant, Pending, Reservation, SlotState, allocate
from testrack.scheduling.dispatch import Dispatcher, Job, Slot
from testrack.scheduling.each import each_runs
from testrack.scheduling.estimates import (
    DEFAULT_ESTIMATE,
    DEFAULT_IMPORT_COST,
    estimate_durations,
    lower_bound,
    lpt_makespan,
)
from testrack.scheduling.matching import Requirement, describe_requirements, matches
from testrack.scheduling.requests import DeviceRequest, Role, Shortfall, declaration, eligibility, shortfall

__all__ = [
    "DEFAULT_ESTIMATE",
    "DEFAULT_IMPORT_COST",
    "Decision",
    "DeviceRequest",
    "Dispatcher",
    "Grant",
    "Job",
    "Pending",
    "Requirement",
    "Reservation",
    "Role",
    "Shortfall",
    "Slot",
    "SlotState",
    "allocate",
    "declaration",
    "describe_requirements",
    "each_runs",
    "eligibility",
    "estimate_durations",
    "lower_bound",
    "lpt_makespan",
    "matches",
    "shortfall",
]
