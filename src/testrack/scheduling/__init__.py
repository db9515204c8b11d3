"""Pure scheduling: which device may run a test, and which test a free slot runs next.

Nothing here starts a process or touches pytest's runtime; it is tested as plain
functions and objects (see ``tests/test_scheduling.py``).
"""

from testrack.scheduling.dispatch import Dispatcher, Job, Slot
from testrack.scheduling.estimates import (
    DEFAULT_ESTIMATE,
    DEFAULT_IMPORT_COST,
    estimate_durations,
    lower_bound,
    lpt_makespan,
)
from testrack.scheduling.matching import Requirement, describe_requirements, matches

__all__ = [
    "DEFAULT_ESTIMATE",
    "DEFAULT_IMPORT_COST",
    "Dispatcher",
    "Job",
    "Requirement",
    "Slot",
    "describe_requirements",
    "estimate_durations",
    "lower_bound",
    "lpt_makespan",
    "matches",
]
